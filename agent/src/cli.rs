//! The `datamon-agent` command line: datamon's command and flag names, global settings
//! merged by [`crate::config`], output as text (datamon's formats) or `--output json`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use datamon_edge::{chain, exit, logging};
use serde::Serialize;

use crate::bundle::download::{download, DownloadRequest};
use crate::bundle::upload::{upload, UploadRequest};
use crate::bundle::BundleRef;
use crate::config::{self, Settings};
use crate::context::{self, Stores};
use crate::error::Error;
use crate::model::context::BucketNames;
use crate::mount::{FileOwner, MountRequest};

/// datamon-compatible bundle store agent.
#[derive(Debug, Parser)]
#[command(name = "datamon-agent", version, about, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub globals: Globals,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Global flags; each overrides the config file and the environment.
#[derive(Debug, Args, Serialize)]
pub struct Globals {
    /// Config bucket: gs://bucket, s3://bucket, file:///dir (env DATAMON_GLOBAL_CONFIG).
    #[arg(long, global = true, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Context name [default: dev] (env DATAMON_CONTEXT).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Settings file [default: ~/.datamon2/datamon.yaml if present].
    #[arg(long, global = true, env = "DATAMON_CONFIG_FILE", value_name = "FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000 (env DATAMON_S3_ENDPOINT).
    #[arg(long, global = true, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// Endpoint of a GCS emulator, e.g. http://127.0.0.1:4443; requests to it go unsigned
    /// (env DATAMON_GCS_ENDPOINT, or STORAGE_EMULATOR_HOST as Google's libraries read it).
    #[arg(long, global = true, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs_endpoint: Option<String>,
    /// Read GCS without credentials: a public bucket (env DATAMON_GCS_ANONYMOUS=true).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gcs_anonymous: bool,
    /// Files transferred at once (env DATAMON_CONCURRENCY).
    #[arg(long = "concurrency-factor", global = true)]
    #[serde(rename = "concurrency", skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Memory for data in flight, in MiB (env DATAMON_MEMORY_MIB).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<usize>,
    /// Log filter: error, warn, info, debug (env DATAMON_LOGLEVEL).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglevel: Option<String>,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Contexts: named sets of buckets.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Repositories.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Bundles: versions of a repo's files.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Labels: names for bundles.
    #[command(subcommand)]
    Label(LabelCommand),
    /// Carry out a sidecar's share of a pod's data plan: provide inputs, upload outputs.
    Sidecar {
        /// The plan.
        #[command(flatten)]
        plan: PlanArgs,
        /// Which of the plan's sidecars this process is.
        #[arg(long, default_value = datamon_plan::DEFAULT_SIDECAR)]
        participant: String,
    },
    /// Run the application once the plan's sidecars are ready; wait for its outputs.
    Wrap {
        /// The plan.
        #[command(flatten)]
        plan: PlanArgs,
        /// Which of the plan's application participants this is (`apps` in the plan).
        #[arg(long, default_value = datamon_plan::APP)]
        participant: String,
        /// The application's command and arguments, after `--`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Exit 0 if a participant of the plan is ready (for startupProbe/readinessProbe).
    Probe {
        /// The plan.
        #[command(flatten)]
        plan: PlanArgs,
        /// Which participant.
        #[arg(long, default_value = datamon_plan::DEFAULT_SIDECAR)]
        participant: String,
    },
    /// Each participant's phase, step, bundles, transfers (bytes and files done of total,
    /// speed) and reason, from the pod's coordination directory
    /// (`kubectl exec POD -c datamon -- datamon-agent status`).
    Status {
        /// The plan (for its coordination directory and participants), if the container
        /// has one.
        #[command(flatten)]
        plan: PlanArgs,
        /// The coordination directory (default: the plan's, else /var/run/datamon).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Output format: text or json.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Copy this binary into DIR (a shared volume), so any image can run `wrap`.
    Install {
        /// Target directory.
        dir: PathBuf,
    },
}

/// Where the data plan comes from.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Plan file (YAML or JSON); else the plan itself in DATAMON_PLAN.
    #[arg(long = "plan", env = crate::runtime::PLAN_FILE_ENV, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Output format of listings.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    /// datamon's text format.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// `context` subcommands.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Create a context in the config bucket (on file://, also its bucket directories).
    Create {
        /// Blob bucket [default: <context>-blob].
        #[arg(long)]
        blob: Option<String>,
        /// Metadata bucket [default: <context>-metadata].
        #[arg(long)]
        meta: Option<String>,
        /// Versioned metadata bucket [default: <context>-v-metadata].
        #[arg(long)]
        vmeta: Option<String>,
        /// WAL bucket [default: <context>-wal].
        #[arg(long)]
        wal: Option<String>,
        /// Read log bucket [default: <context>-read-log].
        #[arg(long)]
        read_log: Option<String>,
    },
}

/// `repo` subcommands.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repo.
    Create {
        /// Repo name (letters, digits, hyphens).
        #[arg(long)]
        repo: String,
        /// What the repo holds.
        #[arg(long)]
        description: String,
    },
    /// List repos.
    List {
        /// Output format: text (datamon's) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Upload a directory as a new bundle.
    Upload {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Directory to upload.
        #[arg(long)]
        path: PathBuf,
        /// Commit message.
        #[arg(long)]
        message: String,
        /// Label to set on the new bundle.
        #[arg(long)]
        label: Option<String>,
    },
    /// Download a bundle into a directory.
    Download {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Destination directory (must be empty unless --force-dest).
        #[arg(long)]
        destination: PathBuf,
        /// Bundle id [default: latest].
        #[arg(long, conflicts_with = "label")]
        bundle: Option<String>,
        /// Label of the bundle.
        #[arg(long)]
        label: Option<String>,
        /// Only entries whose names match this regular expression (RE2 syntax).
        #[arg(long)]
        name_filter: Option<String>,
        /// Download into a non-empty destination.
        #[arg(long)]
        force_dest: bool,
    },
    /// Mount a bundle read-only on an empty directory (FUSE) until SIGTERM or SIGINT.
    /// Prints `mounted <DIR>` once the mount is served; keeps at most --memory-mib of
    /// verified leaves in memory.
    Mount {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Mount point: an existing empty directory.
        #[arg(long)]
        mount: PathBuf,
        /// Bundle id [default: latest].
        #[arg(long, conflicts_with = "label")]
        bundle: Option<String>,
        /// Label of the bundle.
        #[arg(long)]
        label: Option<String>,
        /// Let every user of the machine (or pod) read the mount, not only this one.
        #[arg(long)]
        allow_other: bool,
        /// Also keep verified leaves in this directory (created if missing), so that
        /// later mounts read them without the store (env DATAMON_CACHE_DIR).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Most MiB of leaves kept in --cache-dir, least recently used out first
        /// [default: 4096] (env DATAMON_CACHE_MIB).
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=config::MAX_CACHE_MIB))]
        cache_mib: Option<u64>,
        /// User id the mounted files and directories belong to [default: this process's].
        #[arg(long, value_name = "UID")]
        uid: Option<u32>,
        /// Group id the mounted files and directories belong to [default: this process's].
        #[arg(long, value_name = "GID")]
        gid: Option<u32>,
    },
    /// List a repo's bundles, oldest first.
    List {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Output format: text (datamon's) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `label` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// Point a label at a bundle.
    Set {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Label name (e.g. `latest-good`).
        #[arg(long)]
        label: String,
        /// Bundle id.
        #[arg(long)]
        bundle: String,
    },
    /// Show a label.
    Get {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Label name (e.g. `latest-good`).
        #[arg(long)]
        label: String,
        /// Output format: text (datamon's) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List a repo's labels.
    List {
        /// Repository name (list them with `datamon-agent repo list`).
        #[arg(long)]
        repo: String,
        /// Only labels starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Output format: text (datamon's) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Runs the CLI with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match config::config_file(cli.globals.config_file.as_deref())
        .and_then(|f| config::load(f.as_deref(), &cli.globals))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    logging::init(settings.log_format, &settings.loglevel);
    crate::events::configure(settings.events.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The command runs on a worker thread, not on this one: blocking-pool completions then
    // wake a worker that is already running instead of parking and unparking this thread.
    let command = cli.command;
    let task_settings = settings.clone();
    let outcome = runtime.block_on(async move {
        tokio::spawn(async move { run(command, &task_settings).await })
            .await
            .map_err(Error::from)
            .and_then(|r| r)
    });
    // The command is over and has said so (state file, termination message). A blocking
    // task still running (a store read that SIGTERM cut short: a hung NFS or FIFO read
    // cannot be cancelled) must not keep the process alive until the kubelet's SIGKILL:
    // what is still in flight gets a moment, then the process exits.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::debug!(error = ?e, "command failed");
            eprintln!("error: {}", chain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// How long blocking tasks still running after the command may hold its exit.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidName { .. }
        | Error::NoConfigBucket
        | Error::StoreUrl { .. }
        | Error::NameFilter { .. }
        | Error::LeafSize(_)
        | Error::Plan(_)
        | Error::Usage(_) => exit::USAGE,
        _ => exit::FAILURE,
    }
}

async fn open(settings: &Settings) -> crate::Result<Stores> {
    Stores::open(
        &settings.config_bucket()?,
        &settings.context,
        &settings.store_options(),
    )
    .await
}

fn plan(args: &PlanArgs) -> crate::Result<datamon_plan::Plan> {
    Ok(crate::runtime::load_plan(args.file.as_deref())?)
}

/// Runs one command; returns the process's exit code.
pub async fn run(command: Command, settings: &Settings) -> crate::Result<u8> {
    let contributor = &settings.contributor;
    match command {
        Command::Context(ContextCommand::Create {
            blob,
            meta,
            vmeta,
            wal,
            read_log,
        }) => {
            let names = BucketNames {
                blob,
                meta,
                vmeta,
                wal,
                read_log,
            };
            let doc = context::create(
                &settings.config_bucket()?,
                &settings.context,
                &names,
                &settings.store_options(),
            )
            .await?;
            println!("created context {}", doc.name);
        }
        Command::Repo(RepoCommand::Create { repo, description }) => {
            let stores = open(settings).await?;
            crate::repo::create(&stores, &repo, &description, contributor).await?;
            println!("created repo {repo}");
        }
        Command::Repo(RepoCommand::List { output }) => {
            let repos = crate::repo::list(&open(settings).await?).await?;
            print_list(output, &repos, |r| {
                format!(
                    "{} , {} , {} , {} , {}",
                    r.name,
                    r.description,
                    r.contributor.name,
                    r.contributor.email,
                    r.timestamp.to_rfc3339()
                )
            })?;
        }
        Command::Bundle(BundleCommand::Upload {
            repo,
            path,
            message,
            label,
        }) => {
            let stores = open(settings).await?;
            let req = UploadRequest {
                repo,
                source: path,
                message,
                label,
                contributor: contributor.clone(),
                leaf_size: settings.leaf_size()?,
            };
            let report = upload(&stores, &req, &settings.tuning()).await?;
            tracing::info!(
                bundle = %report.bundle.id,
                files = report.files,
                bytes = report.bytes,
                objects_written = report.objects_written,
                objects_deduplicated = report.objects_deduplicated,
                "uploaded"
            );
            println!("Uploaded bundle id:{}", report.bundle.id);
        }
        Command::Bundle(BundleCommand::Download {
            repo,
            destination,
            bundle,
            label,
            name_filter,
            force_dest,
        }) => {
            let stores = open(settings).await?;
            let req = DownloadRequest {
                repo,
                bundle: BundleRef::from_flags(bundle, label),
                destination,
                name_filter,
                force_dest,
            };
            let report = download(&stores, &req, &settings.tuning()).await?;
            println!(
                "Downloaded bundle id:{} ({} files, {} bytes)",
                report.bundle.id, report.files, report.bytes
            );
        }
        Command::Bundle(BundleCommand::Mount {
            repo,
            mount,
            bundle,
            label,
            allow_other,
            cache_dir,
            cache_mib,
            uid,
            gid,
        }) => {
            let stores = open(settings).await?;
            // Its flags override the settings, as the global flags do.
            let disk = Settings {
                cache_dir: cache_dir.or_else(|| settings.cache_dir.clone()),
                cache_mib: cache_mib.unwrap_or(settings.cache_mib),
                ..settings.clone()
            }
            .disk_cache();
            let req = MountRequest {
                repo,
                bundle: BundleRef::from_flags(bundle, label),
                mount,
                allow_other,
                // The mount's data in memory is its leaf cache: the same budget.
                cache_bytes: settings.tuning().memory_budget,
                disk_cache: disk,
                file_owner: FileOwner { uid, gid },
            };
            crate::mount::mount(&stores, &req).await?;
        }
        Command::Bundle(BundleCommand::List { repo, output }) => {
            let bundles = crate::bundle::list(&open(settings).await?, &repo).await?;
            print_list(output, &bundles, |b| {
                format!("{} , {} , {}", b.id, b.timestamp.to_rfc3339(), b.message)
            })?;
        }
        Command::Label(LabelCommand::Set {
            repo,
            label,
            bundle,
        }) => {
            let stores = open(settings).await?;
            crate::label::set(&stores, &repo, &label, &bundle, contributor).await?;
            println!("set label {label} to bundle {bundle}");
        }
        Command::Label(LabelCommand::Get {
            repo,
            label,
            output,
        }) => {
            let doc = crate::label::get(&open(settings).await?, &repo, &label).await?;
            print_list(output, std::slice::from_ref(&doc), label_line)?;
        }
        Command::Label(LabelCommand::List {
            repo,
            prefix,
            output,
        }) => {
            let labels = crate::label::list(&open(settings).await?, &repo, &prefix).await?;
            print_list(output, &labels, label_line)?;
        }
        Command::Sidecar {
            plan: args,
            participant,
        } => {
            let plan = match plan(&args) {
                Ok(plan) => plan,
                Err(e) => {
                    let fallback = crate::runtime::fallback(args.file.as_deref(), &participant);
                    return crate::runtime::sidecar::plan_failed(&fallback, &participant, &e).await;
                }
            };
            let settings = crate::runtime::settings_for(&plan, settings);
            return crate::runtime::sidecar::run(&plan, &participant, &settings).await;
        }
        Command::Wrap {
            plan: args,
            participant,
            command,
        } => {
            return crate::runtime::wrapper::run(&plan(&args)?, &participant, &command).await;
        }
        Command::Probe {
            plan: args,
            participant,
        } => {
            // A plan that does not load: the sidecar said `failed` where the raw plan
            // points, and a failed participant passes the gate (see `probe`).
            let plan = plan(&args).unwrap_or_else(|_| datamon_plan::Plan {
                coordination: crate::runtime::fallback(args.file.as_deref(), &participant)
                    .coordination,
                ..datamon_plan::Plan::default()
            });
            let (ready, what) = crate::runtime::probe::probe(&plan, &participant)?;
            println!("{what}");
            return Ok(if ready { 0 } else { 1 });
        }
        Command::Status { plan, dir, output } => {
            // Without a plan (a container that has none), the default directory and
            // whatever state files are there.
            let plan = (plan.file.is_some()
                || std::env::var_os(crate::runtime::PLAN_ENV).is_some())
            .then(|| self::plan(&plan))
            .transpose()?;
            let dir = dir
                .or_else(|| plan.as_ref().map(|p| p.coordination.clone()))
                .unwrap_or_else(|| datamon_plan::Plan::default().coordination);
            let expected: Vec<String> = plan
                .iter()
                .flat_map(|p| {
                    p.effective_sidecars()
                        .into_iter()
                        .map(|s| s.name)
                        .chain(p.effective_apps())
                })
                .collect();
            let participants = crate::runtime::status::read(&dir, &expected)?;
            match output {
                Output::Text => print!("{}", crate::runtime::status::render(&participants)),
                Output::Json => {
                    let text = serde_json::to_string_pretty(&participants).map_err(|e| {
                        crate::Error::Internal(format!("cannot render the status as JSON: {e}"))
                    })?;
                    println!("{text}");
                }
            }
        }
        Command::Install { dir } => {
            let target = crate::runtime::probe::install(&dir)?;
            println!("installed {}", target.display());
        }
    }
    Ok(0)
}

fn label_line(l: &crate::model::label::LabelDoc) -> String {
    format!("{} , {} , {}", l.name, l.id, l.timestamp.to_rfc3339())
}

/// Prints items one per line in datamon's text format, or as a JSON array.
fn print_list<T: Serialize>(
    output: Output,
    items: &[T],
    line: impl Fn(&T) -> String,
) -> crate::Result<()> {
    let mut out = std::io::stdout().lock();
    let res = match output {
        Output::Text => items.iter().try_for_each(|i| writeln!(out, "{}", line(i))),
        Output::Json => serde_json::to_string_pretty(items)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}")),
    };
    res.map_err(Error::io("write to", "standard output"))
}
