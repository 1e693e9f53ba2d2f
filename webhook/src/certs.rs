//! `datamon-webhook certs`: a CA and a serving certificate for the webhook's Service (rcgen),
//! and the caBundle the API server needs to trust it.
//!
//! Files written in `--out`:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt` | the CA that signed `tls.crt` (its key is never written: a new CA is made per rotation) |
//! | `tls.crt`, `tls.key` | the serving certificate and its key (mode 0600), for the webhook's Secret |
//! | `ca-bundle.crt` | the CAs the API server must trust: `ca.crt`, plus the previous CA during a rotation |
//! | `ca-bundle.b64` | `ca-bundle.crt` in base64, the value of `clientConfig.caBundle` |
//!
//! Rotation (`--rotate`, then `--finish-rotation`): see `certs/README.md`.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

use crate::mutate::k8s_names::is_dns_label;

/// Arguments of `certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// The webhook's Service name.
    #[arg(long, default_value = "datamon-webhook")]
    pub service: String,
    /// The Service's namespace.
    #[arg(long, default_value = "datamon-system")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt, tls.key, ca-bundle.crt and ca-bundle.b64 into
    /// (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Validity of the CA, in days (at least --days).
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Rotate: make a new CA and serving certificate, and write a ca-bundle.crt that holds the
    /// previous ca.crt (read from --out) and the new one, so both stay trusted until every
    /// replica serves the new certificate.
    #[arg(long, conflicts_with_all = ["force", "finish_rotation"])]
    pub rotate: bool,
    /// End a rotation: rewrite ca-bundle.crt and ca-bundle.b64 with ca.crt alone (run it once
    /// every replica serves the new certificate). Writes nothing else.
    #[arg(long, conflicts_with = "force")]
    pub finish_rotation: bool,
    /// Overwrite existing files with a new CA (the API server stops trusting the old
    /// certificate at once: prefer --rotate on a running install).
    #[arg(long)]
    pub force: bool,
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A command-line value is not acceptable.
    #[error("{0}")]
    Usage(String),
    /// rcgen refused the parameters.
    #[error("cannot generate the certificates")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// read, write, create
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A CA and a serving certificate signed by it, in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The CA certificate.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// The DNS names a client may use for `service` in `namespace`.
pub(crate) fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A new CA and a serving certificate for the Service's DNS names, both valid `days` days
/// (ECDSA P-256).
pub fn issue(service: &str, namespace: &str, days: u32) -> Result<Issued, CertsError> {
    issue_with(service, namespace, days, days)
}

fn issue_with(
    service: &str,
    namespace: &str,
    days: u32,
    ca_days: u32,
) -> Result<Issued, CertsError> {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that lag behind ours.
    let not_before = now - time::Duration::hours(1);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // A distinct name per CA, so that a bundle holding an old and a new CA never confuses
    // a verifier choosing the issuer by name.
    let stamp = now.unix_timestamp_nanos();
    ca.distinguished_name
        .push(DnType::CommonName, format!("datamon-webhook CA {stamp}"));
    ca.distinguished_name
        .push(DnType::OrganizationName, "datamon-sidecar");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = now + time::Duration::days(i64::from(ca_days.max(days)));
    ca.serial_number = Some(serial(&ca, &ca_key));
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let names = dns_names(service, namespace);
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[2].clone());
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = now + time::Duration::days(i64::from(days));
    leaf.serial_number = Some(serial(&leaf, &key));
    let cert = leaf.signed_by(&key, &issuer)?;

    Ok(Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A positive serial unique to the key (its SHA-256 key identifier).
fn serial(params: &CertificateParams, key: &KeyPair) -> SerialNumber {
    let mut bytes = params.key_identifier(key);
    if let Some(first) = bytes.first_mut() {
        *first &= 0x7f;
    }
    SerialNumber::from_slice(&bytes)
}

/// A DNS-1123 label, as Service and Namespace names are.
fn check_label(what: &str, value: &str) -> Result<(), CertsError> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(CertsError::Usage(format!(
            "--{what} {value:?} is not a valid Kubernetes name: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        )))
    }
}

/// What `run` wrote, for the summary.
#[derive(Debug)]
pub(crate) struct Written {
    /// The caBundle value (base64 of ca-bundle.crt).
    pub ca_bundle_b64: String,
    /// How many CAs the bundle holds.
    pub cas_in_bundle: usize,
}

/// Does what `certs` does; the files land in `args.out`.
pub(crate) fn run(args: &CertsArgs) -> Result<Written, CertsError> {
    check_label("service", &args.service)?;
    check_label("namespace", &args.namespace)?;
    if !(1..=36_500).contains(&args.days) || !(1..=36_500).contains(&args.ca_days) {
        return Err(CertsError::Usage(
            "--days and --ca-days must be between 1 and 36500".into(),
        ));
    }
    let out = &args.out;
    let ca_path = out.join("ca.crt");
    if args.finish_rotation {
        let ca = read_to_string(&ca_path)?;
        return write_bundle(out, &[ca]);
    }
    let previous = if args.rotate {
        if !ca_path.exists() {
            return Err(CertsError::Usage(format!(
                "--rotate needs the current CA at {}: point --out at the directory of the running install, or generate without --rotate for a first install",
                ca_path.display()
            )));
        }
        Some(read_to_string(&ca_path)?)
    } else {
        if !args.force {
            for name in ["ca.crt", "tls.crt", "tls.key"] {
                if out.join(name).exists() {
                    return Err(CertsError::Usage(format!(
                        "{} exists: use --rotate to replace the certificates of a running install (keeps the old CA trusted), or --force to overwrite",
                        out.join(name).display()
                    )));
                }
            }
        }
        None
    };
    std::fs::create_dir_all(out).map_err(|source| CertsError::Io {
        action: "create",
        path: out.clone(),
        source,
    })?;
    let issued = issue_with(&args.service, &args.namespace, args.days, args.ca_days)?;
    write_file(&out.join("tls.key"), issued.key_pem.as_bytes(), 0o600)?;
    write_file(&out.join("tls.crt"), issued.cert_pem.as_bytes(), 0o644)?;
    write_file(&ca_path, issued.ca_pem.as_bytes(), 0o644)?;
    let mut cas = Vec::new();
    if let Some(old) = previous {
        cas.push(old);
    }
    cas.push(issued.ca_pem);
    write_bundle(out, &cas)
}

fn write_bundle(out: &Path, cas: &[String]) -> Result<Written, CertsError> {
    let mut bundle = String::new();
    for ca in cas {
        bundle.push_str(ca.trim_end());
        bundle.push('\n');
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(bundle.as_bytes());
    write_file(&out.join("ca-bundle.crt"), bundle.as_bytes(), 0o644)?;
    write_file(&out.join("ca-bundle.b64"), b64.as_bytes(), 0o644)?;
    Ok(Written {
        ca_bundle_b64: b64,
        cas_in_bundle: bundle.matches("-----BEGIN CERTIFICATE-----").count(),
    })
}

fn read_to_string(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a reader (the webhook watching the
/// directory) never sees half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

/// Runs `certs`: prints the caBundle on stdout, a summary on stderr.
pub fn main(args: CertsArgs) -> Result<(), CertsError> {
    let written = run(&args)?;
    let dir = args.out.display();
    if args.finish_rotation {
        eprintln!("ca-bundle.crt now holds ca.crt alone; set the webhook's caBundle to {dir}/ca-bundle.b64");
    } else {
        eprintln!(
            "wrote {dir}/ca.crt, tls.crt, tls.key (for {}.{}.svc), ca-bundle.crt ({} CA{}) and ca-bundle.b64",
            args.service,
            args.namespace,
            written.cas_in_bundle,
            if written.cas_in_bundle == 1 { "" } else { "s" }
        );
    }
    println!("{}", written.ca_bundle_b64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &tempfile::TempDir, name: &str) -> String {
        std::fs::read_to_string(dir.path().join(name)).unwrap()
    }

    fn args(out: &Path) -> CertsArgs {
        CertsArgs {
            service: "datamon-webhook".into(),
            namespace: "datamon-system".into(),
            out: out.to_owned(),
            days: 30,
            ca_days: 60,
            rotate: false,
            finish_rotation: false,
            force: false,
        }
    }

    #[test]
    fn rotation_keeps_the_old_ca_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let first = run(&args(dir.path())).unwrap();
        assert_eq!(first.cas_in_bundle, 1);
        let old_ca = read(&dir, "ca.crt");

        // Without --rotate or --force, nothing is overwritten.
        let err = run(&args(dir.path())).unwrap_err();
        assert!(err.to_string().contains("--rotate"), "{err}");

        let rotated = run(&CertsArgs {
            rotate: true,
            ..args(dir.path())
        })
        .unwrap();
        assert_eq!(rotated.cas_in_bundle, 2);
        let new_ca = read(&dir, "ca.crt");
        assert_ne!(old_ca, new_ca);
        let bundle = read(&dir, "ca-bundle.crt");
        assert!(bundle.contains(old_ca.trim_end()) && bundle.contains(new_ca.trim_end()));
        let b64 = read(&dir, "ca-bundle.b64");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, bundle.as_bytes());

        let finished = run(&CertsArgs {
            finish_rotation: true,
            ..args(dir.path())
        })
        .unwrap();
        assert_eq!(finished.cas_in_bundle, 1);
        let bundle = read(&dir, "ca-bundle.crt");
        assert_eq!(bundle.trim_end(), new_ca.trim_end());
    }

    #[test]
    fn the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        run(&args(dir.path())).unwrap();
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_names_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&CertsArgs {
            service: "Bad_Name".into(),
            ..args(dir.path())
        })
        .unwrap_err();
        assert!(matches!(err, CertsError::Usage(_)), "{err}");
    }

    #[test]
    fn names_cover_the_service() {
        assert_eq!(
            dns_names("wh", "ns"),
            ["wh", "wh.ns", "wh.ns.svc", "wh.ns.svc.cluster.local"]
        );
    }
}
