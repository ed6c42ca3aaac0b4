//! The `ftpbridge` command line. Everything else lives in the library.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ftpbridge::config;
use ftpbridge::demo::{DEMO_PASSWORD, DEMO_USER, Demo};
use ftpbridge::obs::{LogFormat, init_logging};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "ftpbridge",
    version,
    about = "FTP/FTPS front end for SFTP and WebDAV storage"
)]
struct Cli {
    /// Log line format; overrides `[logging] format` (the level comes from
    /// RUST_LOG, else `[logging] level`).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file (see proxy.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; exits non-zero naming the bad key.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a password (prompt, or first line of stdin) and print its argon2id hash.
    HashPassword,
    /// GET an http:// URL and exit 0 on a 2xx answer (for container health checks).
    Probe {
        /// e.g. http://127.0.0.1:9180/readyz
        url: String,
    },
    /// Run the proxy in front of an embedded SFTP server (user demo, password demo).
    Demo {
        /// Where the FTP listener binds.
        #[arg(long, default_value = "127.0.0.1:2121")]
        listen: SocketAddr,
        /// Directory the embedded SFTP server serves (default: a new temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also offer explicit FTPS (AUTH TLS) with a generated self-signed certificate.
        #[arg(long)]
        tls: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::HashPassword => hash_password(),
        Command::Run { config } => with_runtime(run(config, cli.log_format)),
        Command::Probe { url } => probe(&url),
        Command::Demo { listen, dir, tls } => {
            // Kept alive for the whole run: it owns the log writer.
            let _log = init_logging(cli.log_format.unwrap_or(LogFormat::Text), "info");
            with_runtime(demo(listen, dir, tls))
        }
    }
}

fn with_runtime(future: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("ftpbridge: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for (i, listener) in config.listeners.iter().enumerate() {
                if listener.data_source.any {
                    eprintln!(
                        "{}: warning: listeners[{i}].data_source = [\"any\"]: passive data connections are accepted from any address; whoever reaches a passive port first gets the transfer",
                        path.display()
                    );
                }
            }
            println!(
                "{}: OK ({} listeners, {} upstreams, {} users)",
                path.display(),
                config.listeners.len(),
                config.upstreams.len(),
                config.users.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("ftpbridge: the passwords differ");
                return ExitCode::FAILURE;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ftpbridge: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("ftpbridge: cannot read the password from stdin: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("ftpbridge: refusing to hash an empty password");
        return ExitCode::FAILURE;
    }
    match ftpbridge::auth::hash_password(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ftpbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf, log_format: Option<LogFormat>) -> ExitCode {
    let config = match config::load(&path) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let log = init_logging(
        log_format.unwrap_or(config.logging.format),
        &config.logging.level,
    );
    let listeners = match ftpbridge::bind_all(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let options = ftpbridge::RunOptions {
        config_path: Some(path),
        admin: None,
        log,
    };
    match ftpbridge::run_with(options, config, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(listen: SocketAddr, dir: Option<PathBuf>, tls: bool) -> ExitCode {
    let demo = match Demo::start(listen, dir, tls).await {
        Ok(demo) => demo,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let url = format!("ftp://{DEMO_USER}:{DEMO_PASSWORD}@{listen}/");
    info!(
        sftp = %demo.sftp.local_addr(),
        directory = %demo.directory.display(),
        "embedded SFTP server ready"
    );
    let mut instructions = format!(
        "ftpbridge demo: FTP on {listen} (user {DEMO_USER}, password {DEMO_PASSWORD})\n  -> SFTP {} serving {}\nTry:  curl {url}\n      curl {url}welcome.txt\n      curl -T somefile {url}\n",
        demo.sftp.local_addr(),
        demo.directory.display()
    );
    if let Some(certificate) = &demo.certificate {
        instructions.push_str(&format!(
            "FTPS: curl --ssl-reqd --cacert {} {url}\n",
            certificate.display()
        ));
    }
    instructions.push_str("Stop with Ctrl-C.\n");
    // Whoever reads stdout may stop reading (a closed pipe): the proxy goes
    // on serving, so the error is ignored rather than a panic of println!.
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, instructions.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stdout));
    drop(stdout);
    match demo.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A minimal HTTP/1.0 GET, so a container image needs no curl for its
/// health check.
fn probe(url: &str) -> ExitCode {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("ftpbridge probe: only http:// URLs are supported");
        return ExitCode::FAILURE;
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let answer = (|| -> std::io::Result<String> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let timeout = std::time::Duration::from_secs(5);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
        let mut response = String::new();
        stream.take(4096).read_to_string(&mut response)?;
        Ok(response)
    })();
    match answer {
        Ok(response)
            if response
                .split_whitespace()
                .nth(1)
                .is_some_and(|code| code.starts_with('2')) =>
        {
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("{}", response.lines().next().unwrap_or("no answer"));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ftpbridge probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("interrupted"),
        _ = terminate => info!("terminated"),
    }
}
