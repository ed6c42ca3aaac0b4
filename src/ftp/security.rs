//! FTPS commands (RFC 2228, RFC 4217): AUTH, PBSZ, PROT, CCC, and the
//! `require_tls` policy checks.
//!
//! RFC 4217 §4: "AUTH TLS" → 234, then the TLS handshake on the control
//! connection. §8-9: PBSZ 0 must precede PROT; PROT P protects data
//! connections, PROT C leaves them clear. RFC 2228 §3: CCC clears the
//! control channel again (refused unless the listener allows it).

use tracing::{info, warn};

use super::command::ProtectionLevel;
use super::reply::Reply;
use super::session::{LoginState, Outcome, Session};
use crate::config::TlsRequirement;

impl Session {
    /// What this session must encrypt: the user's setting once logged in,
    /// the listener's before.
    pub(super) fn tls_requirement(&self) -> TlsRequirement {
        let listener = self.ctx.listener.require_tls;
        match &self.login {
            LoginState::LoggedIn(account) => account.user.require_tls.unwrap_or(listener),
            _ => listener,
        }
    }

    pub(super) fn control_is_tls(&self) -> bool {
        self.control.get_ref().is_tls()
    }

    /// USER/PASS on a clear control connection when TLS is required: the
    /// password must not be sent, so the refusal comes before it is.
    pub(super) fn refuse_clear_login(&self, requirement: TlsRequirement) -> Option<Reply> {
        (requirement >= TlsRequirement::Control && !self.control_is_tls()).then(|| {
            Reply::new(
                530,
                "TLS is required on this server: send AUTH TLS before logging in.",
            )
        })
    }

    pub(super) async fn auth(&mut self, mechanism: String) -> Outcome {
        let (Some(config), Some(tls)) = (self.session_tls.clone(), self.ctx.listener.tls.clone())
        else {
            return Reply::new(502, "TLS is not enabled on this listener.").into();
        };
        if self.control_is_tls() {
            return Reply::new(503, "The control connection is already protected by TLS.").into();
        }
        // AUTH SSL and TLS-P are historical names that also protect data
        // (draft-murray-auth-ftp-ssl); clients that send them expect that.
        let protects_data = match mechanism.as_str() {
            "TLS" | "TLS-C" => false,
            "SSL" | "TLS-P" => true,
            _ => {
                return Reply::new(
                    504,
                    format!("AUTH {mechanism} is not supported; use AUTH TLS."),
                )
                .into();
            }
        };
        if !self.control.read_buffer().is_empty() {
            // Anything already sent after AUTH would be read as if it had come
            // through TLS: the STARTTLS command injection (CVE-2011-0411).
            warn!("plaintext pipelined after AUTH TLS; refusing the upgrade");
            return Outcome::Close(Reply::new(
                534,
                "Commands were sent after AUTH TLS before the handshake; refusing the upgrade.",
            ));
        }
        if self
            .send(Reply::new(234, format!("AUTH {mechanism} successful.")))
            .await
            .is_err()
        {
            return Outcome::Hangup;
        }
        if let Err(e) = self
            .control
            .get_mut()
            .upgrade(config.control, tls.handshake_timeout)
            .await
        {
            info!(error = %e, "TLS handshake on the control connection failed");
            return Outcome::Hangup;
        }
        if protects_data {
            self.pbsz = true;
            self.protect_data = true;
        }
        Outcome::Done
    }

    pub(super) fn pbsz(&mut self, _size: u64) -> Outcome {
        if !self.control_is_tls() {
            return Reply::new(503, "PBSZ requires AUTH TLS first.").into();
        }
        self.pbsz = true;
        // RFC 4217 §8: TLS always uses a buffer size of 0.
        Reply::new(200, "PBSZ=0").into()
    }

    pub(super) fn prot(&mut self, level: ProtectionLevel) -> Outcome {
        if !self.control_is_tls() {
            return Reply::new(503, "PROT requires AUTH TLS first.").into();
        }
        if !self.pbsz {
            return Reply::new(503, "PROT requires PBSZ first.").into();
        }
        match level {
            ProtectionLevel::Private => {
                self.protect_data = true;
                Reply::new(200, "Protection level set to Private.").into()
            }
            ProtectionLevel::Clear if self.tls_requirement() == TlsRequirement::All => {
                Reply::new(534, "Data connections must be protected here (PROT P).").into()
            }
            ProtectionLevel::Clear => {
                self.protect_data = false;
                Reply::new(200, "Protection level set to Clear.").into()
            }
            ProtectionLevel::Safe | ProtectionLevel::Confidential => {
                Reply::new(536, "Only PROT C and PROT P are supported with TLS.").into()
            }
        }
    }

    pub(super) async fn ccc(&mut self) -> Outcome {
        let Some(tls) = self.ctx.listener.tls.clone() else {
            return Reply::new(533, "The control connection is not protected.").into();
        };
        if !self.control_is_tls() {
            return Reply::new(533, "The control connection is not protected.").into();
        }
        if !tls.allow_ccc || self.tls_requirement() >= TlsRequirement::Control {
            return Reply::new(534, "CCC is not allowed on this listener.").into();
        }
        if self
            .send(Reply::new(200, "Control channel will be cleared."))
            .await
            .is_err()
        {
            return Outcome::Hangup;
        }
        match self
            .control
            .get_mut()
            .downgrade(tls.handshake_timeout)
            .await
        {
            Ok(leftover) => {
                self.control.read_buffer_mut().extend_from_slice(&leftover);
                Outcome::Done
            }
            Err(e) => {
                info!(error = %e, "clearing the control channel failed");
                Outcome::Hangup
            }
        }
    }

    /// The refusal for a transfer whose data connection would be clear
    /// where the policy requires protection (RFC 4217 §9: 521).
    pub(super) fn refuse_clear_data(&self) -> Option<Reply> {
        (self.tls_requirement() == TlsRequirement::All && !self.protect_data).then(|| {
            Reply::new(
                521,
                "Data connections must be protected: send PBSZ 0 and PROT P.",
            )
        })
    }
}
