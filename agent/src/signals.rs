//! Signals caught from the process's first moments, so that none arrives before its
//! handler (flyte#6501): SIGTERM and SIGINT end the work; the wrapper also forwards
//! SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the application.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::{Error, Result};

/// SIGTERM and SIGINT.
pub struct Termination {
    term: Signal,
    int: Signal,
}

impl Termination {
    /// Starts catching them.
    pub fn catch() -> Result<Self> {
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    /// The next one, by name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn listen(kind: SignalKind) -> Result<Signal> {
    signal(kind).map_err(Error::io("listen for signals on", "the process"))
}

/// Every signal the wrapper passes on to the application.
pub struct Forwarded {
    termination: Termination,
    hup: Signal,
    quit: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Forwarded {
    /// Starts catching them.
    pub fn catch() -> Result<Self> {
        Ok(Self {
            termination: Termination::catch()?,
            hup: listen(SignalKind::hangup())?,
            quit: listen(SignalKind::quit())?,
            usr1: listen(SignalKind::user_defined1())?,
            usr2: listen(SignalKind::user_defined2())?,
        })
    }

    /// The next one.
    pub async fn recv(&mut self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal as S;
        tokio::select! {
            name = self.termination.recv() => if name == "SIGINT" { S::SIGINT } else { S::SIGTERM },
            _ = self.hup.recv() => S::SIGHUP,
            _ = self.quit.recv() => S::SIGQUIT,
            _ = self.usr1.recv() => S::SIGUSR1,
            _ = self.usr2.recv() => S::SIGUSR2,
        }
    }
}
