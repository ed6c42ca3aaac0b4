//! One FTP session: the task that owns the control connection.
//!
//! The task reads a line, parses it, runs the command and writes the reply.
//! Transfers run in their own task and report back through a join handle, so
//! the control channel stays responsive (ABOR, STAT, NOOP) while data flows.
//! RFC 959 §5.4 defines which reply codes follow which command; each handler
//! documents its part.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

use super::codec::{ControlCodec, ControlInput};
use super::command::{Command, TransferType};
use super::control_socket::ControlSocket;
use super::control_stream::ControlStream;
use super::data::ActiveTransfer;
use super::dataconn::DataSetup;
use super::listing::Facts;
use super::parse::{ParseError, parse};
use super::passive::PassivePorts;
use super::path::VirtualPath;
use super::reply::Reply;
use super::reply_map::{Phase, upstream_reply};
use crate::config::TlsMode;
use crate::config::{ListenerConfig, UserConfig};
use crate::limit::{CommandVerdict, LoginSlot, SessionLimiter};
use crate::net::proxy_protocol::Origin;
use crate::obs::metrics::{CommandLabels, GaugeGuard, reply_class};
use crate::state::Shared;
use crate::tls::session::{SessionTls, session_configs};
use crate::upstream::{RemotePath, SharedUpstream, UpstreamError};

/// How long a session may take to say goodbye on its control connection.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every session of one listener shares.
#[derive(Clone)]
pub struct SessionContext {
    /// The server's reloadable state: the current config (for logins),
    /// metrics, the password checker, the transfer log.
    pub shared: Arc<Shared>,
    /// This listener's settings as of the session's start.
    pub listener: Arc<ListenerConfig>,
    pub passive_ports: Arc<PassivePorts>,
    /// Cancelled when the server shuts down: idle sessions say 421 and end.
    pub shutdown: CancellationToken,
    /// The listener's TLS config, when it offers FTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A logged-in user and their upstream session.
pub(super) struct Account {
    pub user: Arc<UserConfig>,
    pub upstream: SharedUpstream,
    pub cwd: VirtualPath,
    /// The rate limits this session's commands and transfers pass.
    pub limiter: Arc<SessionLimiter>,
    /// Counts this login in `sessions_logged_in` for as long as it lasts.
    pub _presence: GaugeGuard,
    /// Holds this login's place under the tenant's and user's session limits.
    pub _slot: LoginSlot,
}

impl Account {
    pub fn root(&self) -> &RemotePath {
        &self.user.root
    }
}

pub(super) enum LoginState {
    /// Waiting for USER.
    Fresh,
    /// USER given, waiting for PASS.
    UserGiven(String),
    LoggedIn(Box<Account>),
}

/// What a handler asks the loop to do after it ran.
pub(super) enum Outcome {
    Reply(Reply),
    /// Send the reply, then end the session.
    Close(Reply),
    /// A transfer started; its 150 was sent and its final reply comes later.
    Started,
    /// The handler already sent what there was to send.
    Done,
    /// End the session without another reply (a failed TLS handshake).
    Hangup,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome::Reply(reply)
    }
}

pub(super) struct Session {
    pub ctx: SessionContext,
    /// The client: the socket's peer, or behind a trusted load balancer the
    /// source its PROXY header names. Data-connection rules, active-mode
    /// bounce checks and logs all use this address.
    pub peer: SocketAddr,
    /// The control socket's local address: passive ports are bound here.
    pub local: SocketAddr,
    /// The address the client connected to (the PROXY header's destination
    /// behind a load balancer, else `local`): what `passive_address = "auto"`
    /// announces, and the family EPSV speaks.
    pub reached: IpAddr,
    pub control: Framed<ControlStream, ControlCodec>,
    /// This control connection's TLS config; its private session cache is
    /// what makes data-connection resumption a proof (see `tls::session`).
    pub session_tls: Option<SessionTls>,
    /// PBSZ received (RFC 4217 §8).
    pub pbsz: bool,
    /// PROT P in effect: data connections are TLS.
    pub protect_data: bool,
    pub login: LoginState,
    pub failed_logins: u32,
    pub transfer_type: TransferType,
    /// After `EPSV ALL`, PASV is refused (RFC 2428 §4).
    pub epsv_all: bool,
    /// Set by REST, consumed by the next command (RFC 3659 §5.3).
    pub restart: Option<u64>,
    /// Set by RNFR, consumed by the next command (RFC 959 §4.1.3).
    pub rename_from: Option<VirtualPath>,
    /// The data connection the next transfer uses (PASV/EPSV/PORT/EPRT).
    pub data: Option<DataSetup>,
    /// MLSD/MLST facts chosen with OPTS MLST.
    pub mlst_facts: Facts,
    /// The verb whose final reply has not been sent yet (for the metrics).
    pub answering: Option<&'static str>,
    /// The verb of the running transfer, counted when its final reply goes out.
    transfer_verb: Option<&'static str>,
    pub active: Option<ActiveTransfer>,
    pub span: Span,
}

/// Serves one control connection from `origin` (where it really comes
/// from, after any PROXY header) until it ends.
pub async fn serve(stream: TcpStream, origin: Origin, ctx: SessionContext, id: u64) {
    let peer = origin.client();
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            debug!(%peer, error = %e, "connection gone before the greeting");
            return;
        }
    };
    let reached = origin.destination().unwrap_or(local).ip();
    let _ = stream.set_nodelay(true);
    let stream = match ControlSocket::new(stream) {
        Ok(stream) => stream,
        Err(e) => {
            debug!(%peer, error = %e, "cannot set up the control socket");
            return;
        }
    };
    let span = info_span!(
        "session",
        id,
        peer = %peer,
        listener = %ctx.listener.name,
        user = field::Empty,
        upstream = field::Empty,
        via = field::Empty,
    );
    if let Some(proxy) = origin.proxy() {
        span.record("via", field::display(proxy));
    }
    let session_tls = ctx.tls.as_deref().map(session_configs);
    let mut session = Session {
        ctx,
        peer,
        local,
        reached,
        control: Framed::new(ControlStream::Plain(stream), ControlCodec::default()),
        session_tls,
        pbsz: false,
        protect_data: false,
        login: LoginState::Fresh,
        failed_logins: 0,
        transfer_type: TransferType::Ascii,
        epsv_all: false,
        restart: None,
        rename_from: None,
        data: None,
        mlst_facts: Facts::default(),
        answering: None,
        transfer_verb: None,
        active: None,
        span: span.clone(),
    };
    async move {
        info!("session started");
        session.run().await;
        session.finish().await;
        info!("session ended");
    }
    .instrument(span)
    .await;
}

enum DuringTransfer {
    Handled,
    Defer(Bytes),
    QuitAfterTransfer,
}

impl Session {
    async fn run(&mut self) {
        if let (Some(tls), Some(config)) = (&self.ctx.listener.tls, &self.session_tls)
            && tls.mode == TlsMode::Implicit
        {
            // Implicit FTPS: TLS from the first byte, before the greeting.
            if let Err(e) = self
                .control
                .get_mut()
                .upgrade(config.control.clone(), tls.handshake_timeout)
                .await
            {
                info!(error = %e, "implicit TLS handshake failed");
                return;
            }
        }
        let banner = Reply::new(220, self.ctx.listener.banner.clone());
        if self.send(banner).await.is_err() {
            return;
        }
        let login_deadline = Instant::now() + self.ctx.listener.login_timeout;
        let mut deferred: Option<Bytes> = None;
        let mut quit_after_transfer = false;
        loop {
            if self.active.is_none() {
                if quit_after_transfer {
                    let _ = self.send(Reply::new(221, "Goodbye.")).await;
                    return;
                }
                if let Some(line) = deferred.take() {
                    if !self.handle_line(line).await {
                        return;
                    }
                    continue;
                }
            }
            let (deadline, timeout_text) = match self.login {
                LoginState::LoggedIn(_) => (
                    Instant::now() + self.ctx.listener.idle_timeout,
                    "Idle timeout; closing control connection.",
                ),
                _ => (login_deadline, "Login timeout; closing control connection."),
            };
            let reading = deferred.is_none() && !quit_after_transfer;
            tokio::select! {
                outcome = ActiveTransfer::wait(&mut self.active), if self.active.is_some() => {
                    self.active = None;
                    let close = outcome.close_session;
                    if self.send_transfer_end(outcome.reply).await.is_err() || close {
                        return;
                    }
                }
                input = self.control.next(), if reading => {
                    match input {
                        None | Some(Err(_)) => return,
                        Some(Ok(ControlInput::TooLong)) => {
                            if self.send(Reply::new(500, "Command line too long.")).await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(ControlInput::Line(line))) if self.active.is_some() => {
                            match self.handle_during_transfer(line).await {
                                Ok(DuringTransfer::Handled) => {}
                                Ok(DuringTransfer::Defer(line)) => deferred = Some(line),
                                Ok(DuringTransfer::QuitAfterTransfer) => quit_after_transfer = true,
                                Err(()) => return,
                            }
                        }
                        Some(Ok(ControlInput::Line(line))) => {
                            if !self.handle_line(line).await {
                                return;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline), if self.active.is_none() => {
                    info!("{timeout_text}");
                    let _ = self.send(Reply::new(421, timeout_text)).await;
                    return;
                }
                _ = self.ctx.shutdown.cancelled(), if self.active.is_none() => {
                    let _ = self.send(Reply::new(421, "Service shutting down; closing control connection.")).await;
                    return;
                }
            }
        }
    }

    /// Ends whatever is still running: a transfer, a passive port, the upstream.
    async fn finish(&mut self) {
        if let Some(active) = self.active.take() {
            active.cancel_and_wait().await;
        }
        self.data = None;
        if let LoginState::LoggedIn(account) = &self.login {
            account.upstream.close().await;
        }
        // Ends TLS with close_notify (so clients see a clean end rather than
        // a truncation), then the TCP FIN.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.control.close()).await;
    }

    pub async fn send(&mut self, reply: Reply) -> std::io::Result<()> {
        debug!(code = reply.code(), "reply");
        // A command is counted once, with the class of its final reply; a
        // transfer's final reply comes later, through `send_transfer_end`.
        if let Some(verb) = self.answering.take() {
            if reply.code() < 200 {
                self.transfer_verb = Some(verb);
            } else {
                self.count_command(verb, &reply);
            }
        }
        self.control.send(&reply).await
    }

    /// Sends the final reply of the transfer that ran in the background.
    async fn send_transfer_end(&mut self, reply: Reply) -> std::io::Result<()> {
        debug!(code = reply.code(), "transfer reply");
        if let Some(verb) = self.transfer_verb.take() {
            self.count_command(verb, &reply);
        }
        self.control.send(&reply).await
    }

    fn count_command(&self, verb: &'static str, reply: &Reply) {
        self.ctx
            .shared
            .metrics
            .commands
            .get_or_create(&CommandLabels {
                verb,
                class: reply_class(reply.code()),
            })
            .inc();
    }

    /// Runs one command line; false when the session must end.
    async fn handle_line(&mut self, line: Bytes) -> bool {
        // REST and RNFR apply only to the command right after them.
        let restart = self.restart.take();
        let rename_from = self.rename_from.take();
        let command = match parse(&line) {
            Ok(command) => command,
            Err(e) => {
                debug!(error = %e, "unparsable command");
                self.answering = Some("invalid");
                return self.send(parse_error_reply(&e)).await.is_ok();
            }
        };
        debug!(verb = command.verb(), "command");
        self.answering = Some(command.verb());
        if let Some(limiter) = self.account().map(|account| account.limiter.clone()) {
            let cost = if command.is_listing() {
                limiter.listing_cost()
            } else {
                1
            };
            if limiter.command(cost).await == CommandVerdict::Flood {
                warn!("commands over the session's rate for too long; closing");
                let _ = self
                    .send(Reply::new(
                        421,
                        "Too many commands; closing the connection.",
                    ))
                    .await;
                return false;
            }
        }
        let outcome = if !self.is_logged_in() && !command.allowed_before_login() {
            Outcome::Reply(Reply::new(530, "Please log in with USER and PASS first."))
        } else {
            self.dispatch(command, restart, rename_from).await
        };
        match outcome {
            Outcome::Reply(reply) => self.send(reply).await.is_ok(),
            Outcome::Close(reply) => {
                let _ = self.send(reply).await;
                false
            }
            Outcome::Started | Outcome::Done => true,
            Outcome::Hangup => false,
        }
    }

    async fn dispatch(
        &mut self,
        command: Command,
        restart: Option<u64>,
        rename_from: Option<VirtualPath>,
    ) -> Outcome {
        match command {
            Command::User(name) => self.user(name),
            Command::Pass(password) => self.pass(password).await,
            Command::Acct => Reply::new(202, "ACCT not needed.").into(),
            Command::Quit => Outcome::Close(Reply::new(221, "Goodbye.")),
            Command::Noop => Reply::new(200, "NOOP ok.").into(),
            Command::Syst => Reply::new(215, "UNIX Type: L8").into(),
            Command::Feat => self.feat().into(),
            Command::Opts(opts) => self.opts(opts).into(),
            Command::Help(_) => help_reply().into(),
            Command::Pwd => self.pwd().into(),
            Command::Cwd(path) => self.cwd(&path).await,
            Command::Cdup => self.cwd(b"..").await,
            Command::Type(kind) => {
                self.transfer_type = kind;
                let name = match kind {
                    TransferType::Ascii => "A",
                    TransferType::Image => "I",
                };
                Reply::new(200, format!("Type set to {name}.")).into()
            }
            Command::Mode => Reply::new(200, "Mode set to S.").into(),
            Command::Stru => Reply::new(200, "Structure set to F.").into(),
            Command::Pasv => self.pasv().await,
            Command::Epsv(arg) => self.epsv(arg).await,
            Command::Port(target) => self.port(target).into(),
            Command::EprtUnsupportedProtocol => {
                // RFC 2428 §2: 522 lists the protocols we do support.
                Reply::new(522, "Network protocol not supported, use (1,2).").into()
            }
            Command::List(path) => self.list(path, super::data::ListingKind::List).await,
            Command::Nlst(path) => self.list(path, super::data::ListingKind::Names).await,
            Command::Mlsd(path) => self.list(path, super::data::ListingKind::Machine).await,
            Command::Mlst(path) => self.mlst(path).await,
            Command::Retr(path) => self.retr(&path, restart.unwrap_or(0)).await,
            Command::Stor(path) => {
                let kind = match restart {
                    Some(offset) if offset > 0 => {
                        crate::upstream::upload::UploadKind::Resume(offset)
                    }
                    _ => crate::upstream::upload::UploadKind::Replace,
                };
                self.store(&path, kind).await
            }
            Command::Stou(hint) => self.stou(hint).await,
            Command::Appe(path) => {
                self.store(&path, crate::upstream::upload::UploadKind::Append)
                    .await
            }
            Command::Rest(offset) => {
                self.restart = Some(offset);
                Reply::new(
                    350,
                    format!("Restarting at {offset}. Send STOR or RETR to initiate transfer."),
                )
                .into()
            }
            Command::Dele(path) => self.dele(&path).await,
            Command::Mkd(path) => self.mkd(&path).await,
            Command::Rmd(path) => self.rmd(&path).await,
            Command::Rnfr(path) => self.rnfr(&path).await,
            Command::Rnto(path) => self.rnto(&path, rename_from).await,
            Command::Size(path) => self.size(&path).await,
            Command::Mdtm(arg) => self.mdtm(&arg).await,
            Command::Mfmt(time, path) => self.mfmt(time, &path).await,
            Command::Site(site) => self.site(site).await,
            Command::Host(host) => self.host(&host),
            Command::Clnt => Reply::new(200, "Noted.").into(),
            Command::Rein => self.rein().await,
            Command::Auth(mechanism) => self.auth(mechanism).await,
            Command::Pbsz(size) => self.pbsz(size),
            Command::Prot(level) => self.prot(level),
            Command::Ccc => self.ccc().await,
            Command::Stat(None) => self.status().into(),
            Command::Stat(Some(path)) => self.stat_path(&path).await,
            Command::Abor => {
                // RFC 959: with no transfer running, the server just answers.
                self.data = None;
                Reply::new(225, "No transfer to abort.").into()
            }
            Command::Allo(size) => self.allo(size).await,
        }
    }

    /// Commands that arrive while a transfer runs: ABOR, STAT, NOOP and QUIT
    /// are answered now; anything else waits until the transfer has ended.
    async fn handle_during_transfer(&mut self, line: Bytes) -> Result<DuringTransfer, ()> {
        match parse(&line) {
            Ok(Command::Abor) => {
                let Some(active) = self.active.take() else {
                    return Ok(DuringTransfer::Handled);
                };
                let outcome = active.cancel_and_wait().await;
                // The transfer's own reply (426 when it was cut off), then ABOR's.
                self.send_transfer_end(outcome.reply)
                    .await
                    .map_err(|_| ())?;
                self.send(Reply::new(226, "ABOR successful; data connection closed."))
                    .await
                    .map_err(|_| ())?;
                if outcome.close_session {
                    return Err(());
                }
                Ok(DuringTransfer::Handled)
            }
            Ok(Command::Stat(None)) => {
                let text = match &self.active {
                    Some(active) => active.progress_text(),
                    None => "No transfer in progress.".to_owned(),
                };
                self.send(Reply::new(213, text)).await.map_err(|_| ())?;
                Ok(DuringTransfer::Handled)
            }
            Ok(Command::Noop) => {
                self.send(Reply::new(200, "NOOP ok."))
                    .await
                    .map_err(|_| ())?;
                Ok(DuringTransfer::Handled)
            }
            Ok(Command::Quit) => Ok(DuringTransfer::QuitAfterTransfer),
            _ => Ok(DuringTransfer::Defer(line)),
        }
    }

    pub fn is_logged_in(&self) -> bool {
        matches!(self.login, LoginState::LoggedIn(_))
    }

    pub fn account(&self) -> Option<&Account> {
        match &self.login {
            LoginState::LoggedIn(account) => Some(account),
            _ => None,
        }
    }

    /// Resolves a client path against the working directory.
    pub fn resolve(&self, arg: &[u8]) -> Result<(VirtualPath, RemotePath), Reply> {
        let account = self
            .account()
            .ok_or_else(|| Reply::new(530, "Please log in with USER and PASS first."))?;
        let path = account
            .cwd
            .resolve(arg)
            .map_err(|e| Reply::new(501, format!("Invalid path: {e}.")))?;
        let remote = path.to_remote(account.root());
        Ok((path, remote))
    }

    /// Resolves `arg` and returns it with the upstream session, or the reply
    /// that explains why not.
    pub fn target(&self, arg: &[u8]) -> Result<(VirtualPath, RemotePath, SharedUpstream), Reply> {
        let (path, remote) = self.resolve(arg)?;
        let upstream = self
            .account()
            .map(|account| account.upstream.clone())
            .ok_or_else(|| Reply::new(530, "Please log in with USER and PASS first."))?;
        Ok((path, remote, upstream))
    }

    /// Logs an upstream failure and turns it into the reply the table gives.
    pub fn upstream_failure(&self, err: &UpstreamError, phase: Phase) -> Outcome {
        let (reply, close) = upstream_reply(err, phase);
        if close {
            tracing::warn!(error = %err, "upstream failure; closing the session");
            Outcome::Close(reply)
        } else {
            debug!(error = %err, code = reply.code(), "upstream error");
            Outcome::Reply(reply)
        }
    }

    fn opts(&mut self, opts: super::command::Opts) -> Reply {
        match opts {
            // Names pass through as bytes either way, so both are accepted.
            super::command::Opts::Utf8(on) => Reply::new(
                200,
                if on {
                    "UTF8 mode enabled."
                } else {
                    "UTF8 mode disabled."
                },
            ),
            super::command::Opts::Mlst(names) => {
                self.mlst_facts = Facts::select(&names);
                Reply::new(
                    200,
                    format!("MLST OPTS {}", self.mlst_facts.selected_names()),
                )
            }
            super::command::Opts::Other(name) => {
                Reply::new(501, format!("OPTS {name} not understood."))
            }
        }
    }

    fn pwd(&self) -> Reply {
        let Some(account) = self.account() else {
            return Reply::new(530, "Please log in with USER and PASS first.");
        };
        let mut text = super::reply::quote_path(&account.cwd.to_bytes());
        text.extend_from_slice(b" is the current directory.");
        Reply::new(257, text)
    }

    fn status(&self) -> Reply {
        let user = match &self.login {
            LoginState::LoggedIn(account) => format!("Logged in as {}", account.user.name),
            _ => "Not logged in".to_owned(),
        };
        let kind = match self.transfer_type {
            TransferType::Ascii => "ASCII",
            TransferType::Image => "BINARY",
        };
        let data = if self.data.is_some() {
            "Data connection prepared"
        } else {
            "No data connection"
        };
        Reply::multiline(
            211,
            "ftpbridge status:",
            [
                format!("Connected to {}", self.peer).into_bytes(),
                user.into_bytes(),
                format!("TYPE: {kind}, STRUcture: File, MODE: Stream").into_bytes(),
                data.as_bytes().to_vec(),
            ],
            "End of status.",
        )
    }
}

fn parse_error_reply(e: &ParseError) -> Reply {
    let code = match e {
        ParseError::Syntax => 500,
        ParseError::NotImplemented(_) => 502,
        ParseError::BadArgument(_) => 501,
        ParseError::UnsupportedParameter(_) => 504,
        ParseError::UnsupportedNetworkProtocol => 522,
    };
    let mut text = e.to_string();
    if let Some(first) = text.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    text.push('.');
    Reply::new(code, text)
}

impl Session {
    /// RFC 2389 §3.2: one feature per line, each indented by one space; only
    /// what works on this listener, with this session's MLST facts.
    fn feat(&self) -> Reply {
        let mut features = vec!["CLNT".to_owned()];
        if self.ctx.listener.tls.is_some() {
            // RFC 4217 §6: a server offering TLS lists AUTH TLS, PBSZ and PROT.
            features.extend(["AUTH TLS", "PBSZ", "PROT"].map(str::to_owned));
            if self
                .ctx
                .listener
                .tls
                .as_ref()
                .is_some_and(|tls| tls.allow_ccc)
            {
                features.push("CCC".to_owned());
            }
        }
        if self.ctx.listener.active_mode {
            features.push("EPRT".to_owned());
        }
        features.extend(
            [
                "EPSV",
                "HOST",
                "MDTM",
                "MFMT",
                &self.mlst_facts.feat_line(),
                "PASV",
                "REST STREAM",
                "SIZE",
                "TVFS",
                "UTF8",
            ]
            .map(str::to_owned),
        );
        Reply::multiline(
            211,
            "Features:",
            features.iter().map(|f| format!(" {f}").into_bytes()),
            "End",
        )
    }

    /// HOST (RFC 7151 §3): only before login; every host name is served the
    /// same way, so any is accepted.
    fn host(&mut self, host: &[u8]) -> Outcome {
        match self.login {
            LoginState::Fresh => {
                let name = String::from_utf8_lossy(host);
                Reply::new(220, format!("HOST {name} accepted.")).into()
            }
            _ => Reply::new(503, "HOST must come before USER.").into(),
        }
    }

    /// REIN (RFC 959 §4.1.1): log out, keep the control connection, and
    /// return to the state after the greeting.
    async fn rein(&mut self) -> Outcome {
        self.data = None;
        if let LoginState::LoggedIn(account) = std::mem::replace(&mut self.login, LoginState::Fresh)
        {
            account.upstream.close().await;
        }
        self.transfer_type = TransferType::Ascii;
        self.epsv_all = false;
        self.mlst_facts = Facts::default();
        self.pbsz = false;
        self.protect_data = false;
        Reply::new(220, "Service ready for new user.").into()
    }
}

fn help_reply() -> Reply {
    let commands = [
        "ABOR ACCT ALLO APPE AUTH CCC  CDUP CLNT CWD  DELE EPRT EPSV FEAT",
        "HELP HOST LIST MDTM MFMT MKD  MLSD MLST MODE NLST NOOP OPTS PASS",
        "PASV PBSZ PORT PROT PWD  QUIT REIN REST RETR RMD  RNFR RNTO SITE",
        "SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD",
    ];
    Reply::multiline(
        214,
        "The following commands are recognized:",
        commands.iter().map(|c| format!(" {c}").into_bytes()),
        "Help OK.",
    )
}
