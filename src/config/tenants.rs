//! Validation of `[tenants.NAME]`, `[security]` and the limit keys of
//! `[[users]]`: rates and sizes as people write them, every error naming its
//! key (`tenants.acme.download_rate`).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use super::model::{RawSecurity, RawTenant, RawUser};
use super::{
    ConfigError, DEFAULT_TENANT, DirectionRates, EventRate, SecuritySettings, TenantConfig,
    defaults, human,
};

type Result<T> = std::result::Result<T, ConfigError>;

/// Below this a limited transfer would trip the clients' own timeouts.
const MIN_RATE: u64 = 1024;
/// Above this the rate is not a limit on any network we run on.
const MAX_RATE: u64 = 100 * (1 << 30);
const MIN_BURST: u64 = 4 * 1024;
const MAX_BURST: u64 = 1 << 30;
const MAX_LISTING_COST: u32 = 1000;

pub(super) fn tenants(
    raw: &BTreeMap<String, RawTenant>,
) -> Result<HashMap<String, Arc<TenantConfig>>> {
    let mut out = HashMap::new();
    for (name, tenant) in raw {
        let key = |field: &str| format!("tenants.{name}.{field}");
        super::validate::check_name(format!("tenants.{name}"), name)?;
        let rate =
            |field: &str, value: &Option<String>| optional_rate(key(field), value.as_deref());
        let commands = event_rate(
            (key("commands_per_second"), tenant.commands_per_second),
            (key("commands_burst"), tenant.commands_burst),
        )?;
        let session_commands = event_rate(
            (
                key("session_commands_per_second"),
                tenant.session_commands_per_second,
            ),
            (key("session_commands_burst"), tenant.session_commands_burst),
        )?;
        let listing_cost = tenant.listing_cost.unwrap_or(defaults::LISTING_COST);
        if !(1..=MAX_LISTING_COST).contains(&listing_cost) {
            return Err(ConfigError::new(
                key("listing_cost"),
                format!("must be between 1 and {MAX_LISTING_COST}"),
            ));
        }
        let burst = tenant
            .burst
            .as_deref()
            .map(|text| {
                let burst =
                    human::parse_size(text).map_err(|m| ConfigError::new(key("burst"), m))?;
                if !(MIN_BURST..=MAX_BURST).contains(&burst) {
                    return Err(ConfigError::new(
                        key("burst"),
                        "must be between 4 KiB and 1 GiB",
                    ));
                }
                Ok(burst)
            })
            .transpose()?;
        let config = TenantConfig {
            name: name.clone(),
            rates: DirectionRates {
                download: rate("download_rate", &tenant.download_rate)?,
                upload: rate("upload_rate", &tenant.upload_rate)?,
            },
            user_rates: DirectionRates {
                download: rate("user_download_rate", &tenant.user_download_rate)?,
                upload: rate("user_upload_rate", &tenant.user_upload_rate)?,
            },
            session_rates: DirectionRates {
                download: rate("session_download_rate", &tenant.session_download_rate)?,
                upload: rate("session_upload_rate", &tenant.session_upload_rate)?,
            },
            burst,
            commands,
            session_commands,
            listing_cost,
            command_flood_time: match &tenant.command_flood_time {
                None => defaults::COMMAND_FLOOD_TIME,
                Some(text) => human::parse_duration(text)
                    .map_err(|m| ConfigError::new(key("command_flood_time"), m))?,
            },
            max_sessions: at_least_one(key("max_sessions"), tenant.max_sessions)?,
            max_sessions_per_ip: at_least_one(
                key("max_sessions_per_ip"),
                tenant.max_sessions_per_ip,
            )?,
            max_sessions_per_user: at_least_one(
                key("max_sessions_per_user"),
                tenant.max_sessions_per_user,
            )?,
        };
        out.insert(name.clone(), Arc::new(config));
    }
    out.entry(DEFAULT_TENANT.to_owned())
        .or_insert_with(|| Arc::new(TenantConfig::unlimited(DEFAULT_TENANT)));
    Ok(out)
}

/// The tenant, rates and session limit of `[[users]]` entry `i`.
pub(super) fn user_limits(
    i: usize,
    raw: &RawUser,
    tenants: &HashMap<String, Arc<TenantConfig>>,
) -> Result<(Arc<TenantConfig>, DirectionRates, Option<usize>)> {
    let key = |field: &str| format!("users[{i}].{field}");
    let name = raw.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let tenant = tenants.get(name).cloned().ok_or_else(|| {
        let mut known: Vec<&str> = tenants.keys().map(String::as_str).collect();
        known.sort_unstable();
        ConfigError::new(
            key("tenant"),
            format!("no tenant named {name:?} (defined: {})", known.join(", ")),
        )
    })?;
    let rates = DirectionRates {
        download: optional_rate(key("download_rate"), raw.download_rate.as_deref())?,
        upload: optional_rate(key("upload_rate"), raw.upload_rate.as_deref())?,
    };
    let max_sessions = at_least_one(key("max_sessions"), raw.max_sessions)?;
    Ok((tenant, rates, max_sessions))
}

pub(super) fn security(raw: &RawSecurity) -> Result<SecuritySettings> {
    let duration = |field: &str, value: &Option<String>, default| match value {
        None => Ok(default),
        Some(text) => human::parse_duration(text)
            .map_err(|m| ConfigError::new(format!("security.{field}"), m)),
    };
    Ok(SecuritySettings {
        max_failed_logins: raw.max_failed_logins.unwrap_or(defaults::MAX_FAILED_LOGINS),
        max_failed_logins_per_user: raw
            .max_failed_logins_per_user
            .unwrap_or(defaults::MAX_FAILED_LOGINS_PER_USER),
        failed_login_window: duration(
            "failed_login_window",
            &raw.failed_login_window,
            defaults::FAILED_LOGIN_WINDOW,
        )?,
        ban_time: duration("ban_time", &raw.ban_time, defaults::BAN_TIME)?,
        connection_rate: event_rate(
            (
                "security.connections_per_ip_per_second".into(),
                raw.connections_per_ip_per_second,
            ),
            ("security.connection_burst".into(), raw.connection_burst),
        )?,
        password_cache: match raw.password_cache.as_deref() {
            None => Some(defaults::PASSWORD_CACHE),
            Some(text) => human::parse_optional_duration(text)
                .map_err(|m| ConfigError::new("security.password_cache", m))?,
        },
        ban_exempt: super::validate::cidr_list(
            "security.ban_exempt".into(),
            raw.ban_exempt.as_ref(),
        )?,
    })
}

fn optional_rate(key: String, text: Option<&str>) -> Result<Option<u64>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let rate = human::parse_rate(text).map_err(|m| ConfigError::new(key.clone(), m))?;
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(ConfigError::new(
            key,
            "must be between 1 KiB/s and 100 GiB/s; leave it out for no limit",
        ));
    }
    Ok(Some(rate))
}

/// A rate and its burst (twice the rate unless given).
fn event_rate(
    (rate_key, rate): (String, Option<u32>),
    (burst_key, burst): (String, Option<u32>),
) -> Result<Option<EventRate>> {
    let Some(rate) = rate else {
        if burst.is_some() {
            return Err(ConfigError::new(
                burst_key,
                format!("needs {rate_key} as well"),
            ));
        }
        return Ok(None);
    };
    let per_second = NonZeroU32::new(rate).ok_or_else(|| {
        ConfigError::new(rate_key, "must be at least 1; leave it out for no limit")
    })?;
    let burst = match burst {
        None => per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1)),
        Some(burst) => NonZeroU32::new(burst)
            .ok_or_else(|| ConfigError::new(burst_key, "must be at least 1"))?,
    };
    Ok(Some(EventRate { per_second, burst }))
}

fn at_least_one(key: String, value: Option<usize>) -> Result<Option<usize>> {
    match value {
        Some(0) => Err(ConfigError::new(
            key,
            "must be at least 1; leave it out for no limit",
        )),
        other => Ok(other),
    }
}
