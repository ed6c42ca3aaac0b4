//! Data-channel commands: PASV/EPSV (RFC 959, RFC 2428) and the transfers
//! that use the data connection (LIST, NLST, MLSD, RETR, STOR, APPE).
//!
//! A transfer command first prepares the upstream side (so a missing file is
//! a plain 550 with no data connection involved), then replies 150, then runs
//! in its own task: wait for the data connection (425 when none comes), copy,
//! and finish with 226 only once the upstream confirmed the result.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use super::command::{EpsvArg, TransferType};
use super::data_stream::DataStream;
use super::dataconn::{
    ActiveTarget, BounceRefusal, DataConnectionError, DataSetup, check_active_target,
};
use super::files::ListingShape;
use super::listing_stream::ListingBody;
use super::passive::{DataTls, Delivered, OpenError, SlotRequest, TlsOffer};
use super::passive_address::{self, AddressError};
use super::refusals::RefusalCounters;
use super::reply::Reply;
use super::reply_map::{Phase, upstream_reply};
use super::session::{Outcome, Session};
use super::source_policy::SlotRules;
use super::transfer::{self, TransferControl, TransferError};
use prometheus_client::metrics::counter::Counter;

use super::path::VirtualPath;
use crate::config::DEFAULT_TENANT;
use crate::config::ResumptionPolicy;
use crate::limit::Direction;
use crate::net::canonical;
use crate::obs::metrics::{ReasonLabels, TrafficLabels};
use crate::obs::xferlog::{Direction as XferDirection, TransferRecord};
use crate::state::Shared;
use crate::upstream::upload::{Upload, UploadKind};
use crate::upstream::{FileKind, ReadStream};

/// The final reply of a transfer, and whether the session must end after it.
pub struct TransferOutcome {
    pub reply: Reply,
    pub close_session: bool,
}

/// A transfer running in its own task.
pub struct ActiveTransfer {
    join: JoinHandle<TransferOutcome>,
    control: TransferControl,
    description: String,
}

impl ActiveTransfer {
    /// Waits for the transfer in `slot`; pends forever when there is none
    /// (the session loop only polls this when there is).
    pub async fn wait(slot: &mut Option<ActiveTransfer>) -> TransferOutcome {
        match slot {
            Some(active) => join_outcome(&mut active.join).await,
            None => std::future::pending().await,
        }
    }

    /// ABOR or session end: stop the copy, let the task clean up, collect its reply.
    pub async fn cancel_and_wait(mut self) -> TransferOutcome {
        self.control.cancel.cancel();
        join_outcome(&mut self.join).await
    }

    pub fn progress_text(&self) -> String {
        format!(
            "Transfer in progress: {}, {} bytes so far.",
            self.description,
            self.control
                .progress
                .load(std::sync::atomic::Ordering::Relaxed)
        )
    }
}

impl Drop for ActiveTransfer {
    /// A session that ends without waiting (hard stop after the shutdown
    /// grace) must not leave its transfer running detached: cancelling makes
    /// the task stop and undo an unfinished upload on its own.
    fn drop(&mut self) {
        self.control.cancel.cancel();
    }
}

async fn join_outcome(join: &mut JoinHandle<TransferOutcome>) -> TransferOutcome {
    match join.await {
        Ok(outcome) => outcome,
        Err(e) => {
            warn!(error = %e, "transfer task failed");
            TransferOutcome {
                reply: Reply::new(451, "Transfer failed: internal error."),
                close_session: false,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingKind {
    /// LIST: `ls -l` lines.
    List,
    /// NLST: names only.
    Names,
    /// MLSD: RFC 3659 facts.
    Machine,
}

impl Work {
    fn direction(&self) -> &'static str {
        match self {
            Work::Listing(_) => "listing",
            Work::Download(_) => "download",
            Work::Upload(_) => "upload",
        }
    }
}

/// Random names tried by STOU before giving up (collisions are ~impossible).
const UNIQUE_NAME_ATTEMPTS: usize = 5;

/// What a transfer task moves.
enum Work {
    /// Lines formatted as the upstream's batches arrive.
    Listing(Box<dyn ReadStream>),
    Download(Box<dyn ReadStream>),
    Upload(Upload),
}

impl Session {
    pub(super) async fn pasv(&mut self) -> Outcome {
        if self.epsv_all {
            return Reply::new(503, "EPSV ALL is in effect; use EPSV.").into();
        }
        let advertised = match self.advertised_ipv4().await {
            Ok(ip) => ip,
            Err(reply) => return reply.into(),
        };
        let port = match self.open_passive() {
            Ok(port) => port,
            Err(reply) => return reply.into(),
        };
        let [a, b, c, d] = advertised.octets();
        let (p1, p2) = (port >> 8, port & 0xff);
        Reply::new(
            227,
            format!("Entering Passive Mode ({a},{b},{c},{d},{p1},{p2})."),
        )
        .into()
    }

    pub(super) async fn epsv(&mut self, arg: EpsvArg) -> Outcome {
        // The family the client uses is the one of the address it reached.
        let local_is_v4 = canonical(self.reached).is_ipv4();
        match arg {
            EpsvArg::All => {
                self.epsv_all = true;
                return Reply::new(200, "EPSV ALL ok.").into();
            }
            EpsvArg::Protocol(1) if !local_is_v4 => {
                return Reply::new(522, "Network protocol not supported, use (2).").into();
            }
            EpsvArg::Protocol(2) if local_is_v4 => {
                return Reply::new(522, "Network protocol not supported, use (1).").into();
            }
            EpsvArg::Protocol(_) | EpsvArg::Any => {}
        }
        match self.open_passive() {
            Ok(port) => {
                Reply::new(229, format!("Entering Extended Passive Mode (|||{port}|).")).into()
            }
            Err(reply) => reply.into(),
        }
    }

    /// PORT and EPRT (RFC 959 §4.1.2, RFC 2428 §2): remember where to connect
    /// for the next transfer, if the bounce rules allow it.
    pub(super) fn port(&mut self, target: std::net::SocketAddr) -> Reply {
        if self.epsv_all {
            return Reply::new(503, "EPSV ALL is in effect; use EPSV.");
        }
        let listener = &self.ctx.listener;
        if !listener.active_mode {
            return Reply::new(
                502,
                "Active mode is disabled on this listener; use PASV or EPSV.",
            );
        }
        match check_active_target(target, self.peer.ip(), listener.active_min_port) {
            Ok(()) => {}
            Err(BounceRefusal::ForeignAddress) => {
                warn!(%target, control_peer = %self.peer, "refused PORT/EPRT to another host (FTP bounce)");
                self.data_refusals("bounce").inc();
                return Reply::new(
                    501,
                    "PORT/EPRT must name the address of your own control connection.",
                );
            }
            Err(BounceRefusal::LowPort) => {
                warn!(%target, min = listener.active_min_port, "refused PORT/EPRT to a privileged port");
                self.data_refusals("bounce").inc();
                return Reply::new(
                    504,
                    format!(
                        "PORT/EPRT to ports below {} is not allowed.",
                        listener.active_min_port
                    ),
                );
            }
        }
        self.data = Some(DataSetup::Active(ActiveTarget {
            client: target,
            local_ip: self.local.ip(),
            source_port: listener.active_source_port,
        }));
        Reply::new(200, "PORT command successful.")
    }

    /// The counter of data connections refused on this listener for `reason`.
    fn data_refusals(&self, reason: &'static str) -> Counter {
        self.ctx
            .shared
            .metrics
            .data_refusals
            .get_or_create(&ReasonLabels {
                listener: self.ctx.listener.name.clone(),
                reason,
            })
            .clone()
    }

    /// Registers this session on a passive port of the address its control
    /// connection came in on, with the listener's `data_source` rules.
    fn open_passive(&mut self) -> Result<u16, Reply> {
        self.data = None;
        let listener = self.ctx.listener.clone();
        let user_cidrs = self
            .account()
            .map(|account| account.user.data_source_cidrs.clone())
            .unwrap_or_default();
        let protected = self.protect_data && listener.tls.is_some();
        let rules = SlotRules::new(
            listener.data_source,
            self.peer.ip(),
            listener.data_source_cidrs.iter().copied().chain(user_cidrs),
            protected,
        );
        if rules.accepts_nothing() {
            warn!(listener = %listener.name, "no data_source rule can accept a data connection for this session");
            return Err(Reply::new(
                425,
                if listener.data_source.tls_session && !protected {
                    "Data connections here must prove their TLS session: send PBSZ 0 and PROT P first."
                } else {
                    "No data connection source is allowed for this session."
                },
            ));
        }
        let request = SlotRequest {
            rules,
            proxy: listener.proxy_protocol.clone(),
            unclaimed_after: listener.data_connect_timeout,
            refusals: RefusalCounters::from_fn(|reason| self.data_refusals(reason.label())),
        };
        let pending = self
            .ctx
            .passive_ports
            .open(canonical(self.local.ip()), request)
            .map_err(|e| match e {
                OpenError::Exhausted(low, high) => {
                    warn!(listener = %listener.name, low, high, "passive ports exhausted: every port of passive_ports has a waiting transfer; 425 to the client");
                    self.data_refusals("port_exhaustion").inc();
                    Reply::new(425, "No passive port available; try again later.")
                }
                OpenError::Io(e) => {
                    warn!(error = %e, "cannot open a passive port");
                    Reply::new(425, "Cannot open a passive port.")
                }
            })?;
        let port = pending.local_addr().port();
        self.data = Some(DataSetup::Passive(pending));
        Ok(port)
    }

    /// The IPv4 address a PASV reply announces (RFC 959's h1,h2,h3,h4).
    async fn advertised_ipv4(&self) -> Result<std::net::Ipv4Addr, Reply> {
        let listener = &self.ctx.listener;
        let address = passive_address::select(listener, self.peer.ip());
        passive_address::resolve(
            address,
            self.reached,
            self.ctx.passive_ports.hosts(),
            listener.passive_address_ttl,
        )
        .await
        .map_err(|e| match e {
            AddressError::NotIpv4 => Reply::new(425, "PASV needs an IPv4 address; use EPSV."),
            AddressError::Lookup { .. } => {
                warn!(error = %e, "cannot resolve passive_address");
                Reply::new(425, "Cannot determine the passive address; use EPSV.")
            }
        })
    }

    pub(super) async fn list(&mut self, arg: Option<Bytes>, kind: ListingKind) -> Outcome {
        let listing = match self
            .entries_of(arg.as_deref().unwrap_or(b"."), Phase::Opening, true)
            .await
        {
            Ok(listing) => listing,
            Err(outcome) => return outcome,
        };
        if kind == ListingKind::Machine && listing.shape != ListingShape::Directory {
            // RFC 3659 §7.1: MLSD of something that is not a directory is 501.
            if let Some(stream) = listing.stream {
                stream.close().await;
            }
            return Reply::new(501, "MLSD needs a directory; use MLST for a file.").into();
        }
        let path = listing.path.clone();
        let body = ListingBody::new(listing, kind, self.mlst_facts);
        self.start(
            Work::Listing(Box::new(body)),
            Reply::new(150, "Here comes the directory listing."),
            &path,
        )
        .await
    }

    pub(super) async fn retr(&mut self, arg: &[u8], offset: u64) -> Outcome {
        let (path, remote, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        let meta = match upstream.stat(&remote).await {
            Ok(meta) => meta,
            Err(e) => return self.upstream_failure(&e, Phase::Opening),
        };
        if meta.kind != FileKind::File {
            return Reply::new(550, "Not a plain file.").into();
        }
        if offset > meta.size {
            return Reply::new(
                554,
                format!(
                    "Requested action not taken: invalid REST parameter (file has {} bytes).",
                    meta.size
                ),
            )
            .into();
        }
        let stream = match upstream.open_read(&remote, offset).await {
            Ok(stream) => stream,
            Err(e) => return self.upstream_failure(&e, Phase::Opening),
        };
        let opening = Reply::new(
            150,
            format!(
                "Opening {} mode data connection for {path} ({} bytes).",
                self.mode_name(),
                meta.size - offset
            ),
        );
        self.start(Work::Download(stream), opening, &path).await
    }

    pub(super) async fn store(&mut self, arg: &[u8], kind: UploadKind) -> Outcome {
        let (path, remote, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        let atomic = self
            .account()
            .is_some_and(|account| account.user.upstream.atomic_uploads);
        let upload = match Upload::begin(&upstream, &remote, kind, atomic).await {
            Ok(upload) => upload,
            Err(e) => return self.upstream_failure(&e, Phase::Opening),
        };
        let opening = Reply::new(
            150,
            format!(
                "Opening {} mode data connection for {path}.",
                self.mode_name()
            ),
        );
        self.start(Work::Upload(upload), opening, &path).await
    }

    /// STOU (RFC 959 §4.1.3, RFC 1123 §4.1.2.9): store under a new unique
    /// name in the working directory, named in the 150 as "FILE: name".
    pub(super) async fn stou(&mut self, hint: Option<Bytes>) -> Outcome {
        let Some(account) = self.account() else {
            return Reply::new(530, "Please log in with USER and PASS first.").into();
        };
        let upstream = account.upstream.clone();
        let atomic = account.user.upstream.atomic_uploads;
        // A hint names the file the client would like; keep its last component.
        let base = hint
            .as_deref()
            .and_then(|h| h.rsplit(|&b| b == b'/').next())
            .filter(|b| !b.is_empty() && !b.contains(&0))
            .unwrap_or(b"ftpbridge")
            .to_vec();
        for _ in 0..UNIQUE_NAME_ATTEMPTS {
            let mut name = base.clone();
            name.extend_from_slice(format!(".{:08x}", rand::random::<u32>()).as_bytes());
            let Ok((path, remote)) = self.resolve(&name) else {
                break;
            };
            match Upload::begin(&upstream, &remote, UploadKind::Unique, atomic).await {
                Ok(upload) => {
                    let mut opening = b"FILE: ".to_vec();
                    opening.extend_from_slice(&name);
                    return self
                        .start_with_note(
                            Work::Upload(upload),
                            Reply::new(150, opening),
                            &path,
                            Some(name),
                        )
                        .await;
                }
                Err(e) if e.kind() == crate::upstream::ErrorKind::AlreadyExists => continue,
                Err(e) => return self.upstream_failure(&e, Phase::Opening),
            }
        }
        Reply::new(450, "Could not find a unique file name; try again.").into()
    }

    /// The report a transfer of `path` files when it ends.
    fn transfer_report(&self, path: &VirtualPath) -> TransferReport {
        let (user, upstream, tenant) = match self.account() {
            Some(account) => (
                account.user.name.clone(),
                account.user.upstream.name.clone(),
                account.user.tenant.name.clone(),
            ),
            None => (String::new(), String::new(), DEFAULT_TENANT.to_owned()),
        };
        TransferReport {
            shared: self.ctx.shared.clone(),
            listener: self.ctx.listener.name.clone(),
            upstream,
            tenant,
            user,
            peer: self.peer.ip(),
            path: path.to_bytes(),
            ascii: self.transfer_type == TransferType::Ascii,
        }
    }

    fn mode_name(&self) -> &'static str {
        match self.transfer_type {
            TransferType::Ascii => "ASCII",
            TransferType::Image => "BINARY",
        }
    }

    /// Sends the 150, then hands the work to a transfer task whose final
    /// reply the session loop sends when it ends.
    async fn start(&mut self, work: Work, opening: Reply, path: &VirtualPath) -> Outcome {
        self.start_with_note(work, opening, path, None).await
    }

    /// `unique_name`, for STOU, is repeated in the 226.
    async fn start_with_note(
        &mut self,
        work: Work,
        opening: Reply,
        path: &VirtualPath,
        unique_name: Option<Vec<u8>>,
    ) -> Outcome {
        let description = format!("{} of {path}", work.direction());
        let report = self.transfer_report(path);
        if let Some(refusal) = self.refuse_clear_data() {
            drop_work(work);
            return refusal.into();
        }
        let Some(setup) = self.data.take() else {
            drop_work(work);
            return Reply::new(425, "Use PORT, EPRT, PASV or EPSV first.").into();
        };
        if self.send(opening).await.is_err() {
            drop_work(work);
            return Outcome::Close(Reply::new(421, "Control connection failed."));
        }
        let protection = match (&self.ctx.listener.tls, &self.session_tls) {
            (Some(tls), Some(configs)) if self.protect_data => Some(DataProtection {
                tls: DataTls {
                    config: match &work {
                        Work::Upload(_) => configs.upload.clone(),
                        Work::Listing(_) | Work::Download(_) => configs.download.clone(),
                    },
                    handshake_timeout: tls.handshake_timeout,
                    close_notify: tls.data_close_notify,
                },
                resumption: tls.data_resumption,
            }),
            _ => None,
        };
        let control = TransferControl::new(self.ctx.listener.data_idle_timeout);
        let direction = match &work {
            Work::Upload(_) => Direction::Upload,
            Work::Listing(_) | Work::Download(_) => Direction::Download,
        };
        let throttle = self
            .account()
            .map(|account| account.limiter.transfer(direction));
        let plan = TransferPlan {
            throttle,
            setup,
            work,
            ascii: self.transfer_type == TransferType::Ascii,
            connect_timeout: self.ctx.listener.data_connect_timeout,
            protection,
            control: control.clone(),
            description: description.clone(),
            unique_name,
            report,
        };
        let task = run_transfer(plan).instrument(self.span.clone());
        self.active = Some(ActiveTransfer {
            join: tokio::spawn(task),
            control,
            description,
        });
        Outcome::Started
    }
}

fn drop_work(work: Work) {
    if let Work::Upload(upload) = work {
        tokio::spawn(upload.abort());
    } else if let Work::Download(stream) = work {
        tokio::spawn(stream.close());
    }
}

/// TLS on a transfer's data connection (PROT P).
struct DataProtection {
    tls: DataTls,
    resumption: ResumptionPolicy,
}

/// Everything a transfer task needs.
struct TransferPlan {
    setup: DataSetup,
    work: Work,
    ascii: bool,
    connect_timeout: Duration,
    protection: Option<DataProtection>,
    control: TransferControl,
    description: String,
    /// For STOU: repeated in the 226.
    unique_name: Option<Vec<u8>>,
    report: TransferReport,
    throttle: transfer::Throttle,
}

/// Who moved what, for the transfer's metrics and its xferlog line.
struct TransferReport {
    shared: Arc<Shared>,
    listener: String,
    upstream: String,
    tenant: String,
    user: String,
    peer: IpAddr,
    path: Vec<u8>,
    ascii: bool,
}

impl TransferReport {
    fn finish(&self, direction: &'static str, result: &'static str, bytes: u64, elapsed: Duration) {
        let metrics = &self.shared.metrics;
        metrics.record_transfer(direction, result, elapsed);
        let xfer_direction = match direction {
            "download" => XferDirection::Outgoing,
            "upload" => XferDirection::Incoming,
            _ => return,
        };
        metrics
            .bytes
            .get_or_create(&TrafficLabels {
                listener: self.listener.clone(),
                upstream: self.upstream.clone(),
                tenant: self.tenant.clone(),
                direction,
            })
            .inc_by(bytes);
        self.shared.xferlog.record(&TransferRecord {
            finished: chrono::Utc::now(),
            duration: elapsed,
            remote: self.peer,
            bytes,
            path: self.path.clone(),
            ascii: self.ascii,
            direction: xfer_direction,
            user: self.user.clone(),
            complete: result == "ok",
        });
    }
}

/// Why a data connection could not be used: the client's reply, and the
/// reason label of the refusal counter (`None` when the connections were
/// refused one by one and already counted as they came).
struct DataRefusal {
    reply: Reply,
    reason: Option<&'static str>,
}

impl DataRefusal {
    fn new(reason: &'static str, reply: Reply) -> Self {
        DataRefusal {
            reply,
            reason: Some(reason),
        }
    }
}

/// Waits for (or opens) the data connection and, under PROT P, runs its TLS
/// handshake and applies the resumption policy; a connection a TLS-session
/// proof admitted has had both already.
async fn open_data(
    setup: DataSetup,
    connect_timeout: Duration,
    protection: Option<&DataProtection>,
    description: &str,
) -> Result<DataStream, DataRefusal> {
    let offer = match protection {
        Some(protection) => TlsOffer::Protected(protection.tls.clone()),
        None => TlsOffer::Clear,
    };
    let delivered = setup
        .connection(connect_timeout, offer)
        .await
        .map_err(|e| {
            info!(%description, error = %e, "no data connection");
            let reason = match e {
                DataConnectionError::Timeout(_) => Some("timeout"),
                DataConnectionError::Connect(..) => Some("connect_failed"),
                DataConnectionError::Reclaimed => Some("reclaimed"),
                DataConnectionError::Refused => None,
            };
            DataRefusal {
                reply: Reply::new(425, e.reply_text()),
                reason,
            }
        })?;
    let tcp = match delivered {
        Delivered::Proven(secured) => return Ok(secured.accept()),
        Delivered::Tcp(tcp) => tcp,
    };
    let Some(protection) = protection else {
        return Ok(DataStream::Plain(tcp));
    };
    let tls = &protection.tls;
    let secured = DataStream::secure(
        tcp,
        tls.config.clone(),
        tls.handshake_timeout,
        tls.close_notify,
    )
    .await
    .map_err(|e| {
        info!(%description, error = %e, "TLS handshake on the data connection failed");
        DataRefusal::new(
            "tls_handshake",
            Reply::new(425, "TLS negotiation on the data connection failed."),
        )
    })?;
    match (secured.resumed, protection.resumption) {
        (false, ResumptionPolicy::Required) => {
            warn!(%description, "refused a data connection that did not resume the control connection's TLS session");
            Err(DataRefusal::new(
                "tls_resumption",
                Reply::new(
                    522,
                    "The data connection must resume the TLS session of the control connection.",
                ),
            ))
        }
        (false, ResumptionPolicy::Preferred) => {
            info!(%description, "data connection did not resume the control connection's TLS session; accepted (preferred)");
            Ok(secured.accept())
        }
        _ => Ok(secured.accept()),
    }
}

async fn run_transfer(plan: TransferPlan) -> TransferOutcome {
    let TransferPlan {
        setup,
        work,
        ascii,
        connect_timeout,
        protection,
        control,
        description,
        unique_name,
        report,
        mut throttle,
    } = plan;
    let started = Instant::now();
    let connection = tokio::select! {
        biased;
        _ = control.cancel.cancelled() => Err(None),
        result = open_data(setup, connect_timeout, protection.as_ref(), &description) => result.map_err(Some),
    };
    let mut data = match connection {
        Ok(data) => data,
        Err(refusal) => {
            let direction = work.direction();
            drop_work(work);
            let (reply, result) = match refusal {
                Some(DataRefusal { reply, reason }) => {
                    if let Some(reason) = reason {
                        report
                            .shared
                            .metrics
                            .data_refusals
                            .get_or_create(&ReasonLabels {
                                listener: report.listener.clone(),
                                reason,
                            })
                            .inc();
                    }
                    (reply, "failed")
                }
                None => (
                    Reply::new(426, "Transfer aborted before the data connection opened."),
                    "aborted",
                ),
            };
            report.finish(direction, result, 0, started.elapsed());
            return TransferOutcome {
                reply,
                close_session: false,
            };
        }
    };

    let (direction, result) = match work {
        Work::Listing(mut body) => {
            // Listing lines are CRLF already: no ASCII conversion.
            let result =
                transfer::download(&mut data, body.as_mut(), false, &control, &mut throttle).await;
            body.close().await;
            ("listing", result)
        }
        Work::Download(mut stream) => {
            let result =
                transfer::download(&mut data, stream.as_mut(), ascii, &control, &mut throttle)
                    .await;
            stream.close().await;
            ("download", result)
        }
        Work::Upload(mut upload) => {
            let received =
                transfer::upload(&mut data, &mut upload, ascii, &control, &mut throttle).await;
            let result = match received {
                Ok(received) => upload
                    .commit()
                    .await
                    .map(|_| received)
                    .map_err(TransferError::Upstream),
                Err(e) => {
                    upload.abort().await;
                    Err(e)
                }
            };
            ("upload", result)
        }
    };
    drop(data);

    let elapsed = started.elapsed();
    let moved = control.progress.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(TransferError::Aborted) => "aborted",
        Err(_) => "failed",
    };
    report.finish(direction, outcome, moved, elapsed);
    match result {
        Ok(bytes) => {
            info!(direction, %description, bytes, duration_ms = elapsed.as_millis() as u64, result = "ok", "transfer");
            let mut text = if direction == "listing" {
                b"Directory send OK.".to_vec()
            } else {
                format!("Transfer complete ({bytes} bytes).").into_bytes()
            };
            if let Some(name) = unique_name {
                text.extend_from_slice(b" Unique file name: ");
                text.extend_from_slice(&name);
            }
            TransferOutcome {
                reply: Reply::new(226, text),
                close_session: false,
            }
        }
        Err(e) => {
            let bytes = control.progress.load(std::sync::atomic::Ordering::Relaxed);
            info!(direction, %description, bytes, duration_ms = elapsed.as_millis() as u64, result = %e, "transfer");
            failure_outcome(&e)
        }
    }
}

fn failure_outcome(e: &TransferError) -> TransferOutcome {
    let reply = match e {
        TransferError::DataConnection(_) => {
            Reply::new(426, "Data connection closed; transfer aborted.")
        }
        TransferError::DataTimeout(_) => {
            Reply::new(426, "Data connection timed out; transfer aborted.")
        }
        TransferError::Aborted => Reply::new(426, "Transfer aborted."),
        TransferError::Upstream(err) => upstream_reply(err, Phase::Transfer).0,
    };
    TransferOutcome {
        reply,
        close_session: false,
    }
}
