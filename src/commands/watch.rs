use super::Exit;
use crate::cli::{Global, WatchArgs};
use crate::watch::{self, Config, WatchError};

use super::{CliError, connect_sharing, open_state};

pub async fn run(g: &Global, args: &WatchArgs) -> Result<Exit, CliError> {
    let paths = if args.paths.is_empty() { vec![g.manifest.clone()] } else { args.paths.clone() };
    let interval = args.interval.max(std::time::Duration::from_millis(100));
    let config = Config {
        paths,
        interval,
        unready_after: args.unready_after.unwrap_or_else(|| watch::metrics::unready_after(interval)),
        listen: args.listen,
        remediate: args.remediate,
        lock_timeout: args.lock_timeout,
        parallelism: args.parallelism.into(),
        var_sets: args
            .var_sets
            .iter()
            .map(|set| set.split(',').filter(|s| !s.is_empty()).map(std::path::PathBuf::from).collect())
            .collect(),
        lease_ttl: args.lease_ttl,
        lease_renew: args.lease_renew,
        http: watch::server::Limits {
            header_timeout: args.http_header_timeout,
            idle_timeout: args.http_idle_timeout,
            max_connections: args.http_max_connections as usize,
        },
        settle: args.settle,
    };
    if args.http_header_timeout.is_zero() || args.http_header_timeout > std::time::Duration::from_secs(10) {
        return Err(CliError::Refused(format!(
            "--http-header-timeout ({}) must be more than 0 and at most 10s: a longer wait lets a slow client hold a connection",
            humantime::format_duration(args.http_header_timeout)
        )));
    }
    if args.http_idle_timeout.is_zero() {
        return Err(CliError::Refused("--http-idle-timeout must be more than 0".into()));
    }
    if args.lease_renew.is_zero() || args.lease_renew >= args.lease_ttl {
        return Err(CliError::Refused(format!(
            "--lease-renew ({}) must be shorter than --lease-ttl ({}): a lease renewed less often than it lasts expires while its holder is alive",
            humantime::format_duration(args.lease_renew),
            humantime::format_duration(args.lease_ttl)
        )));
    }
    let store = open_state(g).await?;
    let aws = match connect_sharing(g, crate::cli::WATCH_API_SHARE).await {
        Ok(aws) => aws,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let result = watch::run(config, store.clone(), aws).await;
    store.close().await;
    match result {
        Ok(()) => Ok(Exit::Ok),
        Err(WatchError::Manifest(e)) => Err(CliError::Manifest(e)),
        Err(WatchError::State(e)) => Err(CliError::State(e)),
        Err(e) => Err(CliError::Refused(e.to_string())),
    }
}
