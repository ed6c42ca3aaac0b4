//! The deployment artifacts under docker/: every configuration they carry
//! passes `ftpbridge check`, and the pieces agree with each other (ports,
//! probes, drain timeouts, metric names).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::http::get;
use common::proxy::{PASSWORD, Proxy, alice_config, connect_and_login};
use common::sshd::Sshd;
use ftpbridge::config::{self, RuntimeConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ftpbridge");

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn yaml(relative: &str) -> Value {
    serde_saphyr::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn yaml_documents(relative: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

/// `ftpbridge check` on `file` with `env`, as an operator runs it.
fn check(file: &Path, env: &BTreeMap<String, String>) {
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(file)
        .env_clear()
        .envs(env)
        .output()
        .expect("run ftpbridge check");
    assert!(
        output.status.success(),
        "{} with {env:?}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The same config through the library, to compare its values with the
/// artifact around it.
fn load(file: &Path, env: &BTreeMap<String, String>) -> RuntimeConfig {
    config::load_with_env(file, env.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Values for the variables docker/setup.sh writes to docker/.env.
fn setup_sh_variables() -> BTreeMap<String, String> {
    let setup = read("docker/setup.sh");
    let mut variables = BTreeMap::new();
    for line in setup.lines() {
        if let Some((name, _)) = line.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            let value = match name {
                "SFTP_HOST_KEY" => "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
                "PASSIVE_ADDRESS" => "127.0.0.1",
                _ => "generated-password",
            };
            variables.insert(name.to_owned(), value.to_owned());
        }
    }
    variables
}

/// Replaces `${NAME}` with its value; every variable must be known.
fn substitute(text: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let name = &rest[start + 2..end];
        let value = variables
            .get(name)
            .unwrap_or_else(|| panic!("${{{name}}} is not written by docker/setup.sh"));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_compose_stack_runs_proxy_toml_with_a_valid_environment() {
    let compose = yaml("docker/compose.yaml");
    let variables = setup_sh_variables();
    let service = &compose["services"]["ftpbridge"];
    let mut env: BTreeMap<String, String> = service["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(key, value)| {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("{key} is not a string"));
            (key.clone(), substitute(value, &variables))
        })
        .collect();
    // The transfer log's directory exists in the image; here it is a temp dir.
    let xferlog = env
        .get("FTPBRIDGE__LOGGING__XFERLOG")
        .expect("a transfer log")
        .clone();
    let log_dir = Path::new(&xferlog).parent().unwrap().display().to_string();
    assert!(
        read("docker/Dockerfile").contains(&format!("chown ftpbridge:ftpbridge {log_dir}")),
        "the image creates {log_dir} for the ftpbridge user"
    );
    let local_logs = tempfile::tempdir().unwrap();
    env.insert(
        "FTPBRIDGE__LOGGING__XFERLOG".into(),
        local_logs.path().join("xferlog").display().to_string(),
    );
    let proxy_toml = repo_path("proxy.toml");
    check(&proxy_toml, &env);
    let config = load(&proxy_toml, &env);

    // Every upstream of proxy.toml is pointed at a service of the stack.
    let services: BTreeSet<&str> = compose["services"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for (key, value) in &env {
        if key.ends_with("__ADDRESS") || key.ends_with("__URL") {
            let host = value
                .trim_start_matches("http://")
                .split([':', '/'])
                .next()
                .unwrap();
            assert!(services.contains(host), "{key}={value}: no service {host}");
        }
    }
    // Published ports: the listener and its whole passive range.
    let published: Vec<&str> = service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let listener = &config.listeners[0];
    let passive = listener.passive_ports.clone().expect("a passive range");
    assert!(published.contains(&format!("{0}:{0}", listener.bind.port()).as_str()));
    assert!(
        published.contains(&format!("{0}-{1}:{0}-{1}", passive.start(), passive.end()).as_str()),
        "{published:?}"
    );
    // Prometheus scrapes the admin endpoint the environment opens.
    let admin = config.admin.as_ref().expect("[admin]");
    assert!(
        !admin.bind.ip().is_loopback(),
        "Prometheus scrapes from another container"
    );
    let prometheus = yaml("docker/prometheus/prometheus.yml");
    assert_eq!(
        text(&prometheus, "/scrape_configs/0/static_configs/0/targets/0"),
        format!("ftpbridge:{}", admin.bind.port())
    );
    let datasource = yaml("docker/grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(
        text(&datasource, "/datasources/0/url"),
        "http://prometheus:9090"
    );
    // The stop grace period outlasts the drain.
    let grace = humantime::parse_duration(service["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(grace > config.shutdown.drain_timeout);

    // Files the stack mounts or builds exist (./secrets/ is setup.sh's output).
    let setup = read("docker/setup.sh");
    for (name, service) in compose["services"].as_object().unwrap() {
        if let Some(context) = service.pointer("/build/context").and_then(Value::as_str) {
            let dockerfile = service
                .pointer("/build/dockerfile")
                .and_then(Value::as_str)
                .map(|f| repo_path("docker").join(context).join(f))
                .unwrap_or_else(|| repo_path("docker").join(context).join("Dockerfile"));
            assert!(
                dockerfile.exists(),
                "{name}: {} missing",
                dockerfile.display()
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if let Some(secret) = source.strip_prefix("./secrets/") {
                assert!(
                    setup.contains(&format!("secrets/{secret}")),
                    "setup.sh writes {secret}"
                );
            } else if source.starts_with("./") {
                assert!(
                    repo_path("docker").join(source).exists(),
                    "{name}: {source} missing"
                );
            }
        }
    }
}

#[test]
fn the_webdav_image_config_is_accepted_by_nginx() {
    let nginx = Path::new("/usr/sbin/nginx");
    assert!(
        nginx.exists(),
        "run scripts/test.sh (as root) to install nginx"
    );
    let dir = tempfile::tempdir().unwrap();
    // The test runs as whoever runs the suite: only the file paths change.
    let conf = read("docker/webdav/nginx.conf")
        .replace("user www-data;", "")
        .replace(
            "/run/nginx.pid",
            &dir.path().join("nginx.pid").display().to_string(),
        );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let output = Command::new(nginx)
        .args(["-t", "-p"])
        .arg(dir.path())
        .args(["-e", "/dev/stderr", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_image_builds_from_what_it_copies_and_checks_its_health() {
    let dockerfile = read("docker/Dockerfile");
    let config_file = repo_path("proxy.toml");
    let config = load(&config_file, &BTreeMap::new());

    // The build stage copies enough for Cargo to resolve the package, locked.
    let staging = tempfile::tempdir().unwrap();
    let copies: Vec<Vec<&str>> = dockerfile
        .lines()
        .take_while(|line| !line.starts_with("FROM debian"))
        .filter_map(|line| line.strip_prefix("COPY "))
        .map(|args| args.split_whitespace().collect())
        .collect();
    assert!(!copies.is_empty());
    for args in &copies {
        let (sources, destination) = args.split_at(args.len() - 1);
        for source in sources {
            let target = match destination[0] {
                "./" => staging.path().join(source),
                dir => staging.path().join(dir.trim_start_matches("./")),
            };
            copy_recursively(&repo_path(source), &target);
        }
    }
    // `cargo tree` resolves for this platform from the lock file alone
    // (offline: tests touch no network).
    let metadata = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--manifest-path",
        ])
        .arg(staging.path().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "the build stage lacks a file: {}",
        String::from_utf8_lossy(&metadata.stderr)
    );

    // The runtime stage: non-root, the shipped config, ports, health check.
    assert!(dockerfile.contains("COPY proxy.toml /etc/ftpbridge/proxy.toml"));
    let user = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    let admin = config.admin.as_ref().expect("proxy.toml has [admin]");
    let passive = config.listeners[0].passive_ports.clone().unwrap();
    let expose = format!(
        "EXPOSE {} {}-{} {}",
        config.listeners[0].bind.port(),
        passive.start(),
        passive.end(),
        admin.bind.port()
    );
    assert!(dockerfile.contains(&expose), "{expose}");
    let health = format!(
        "CMD [\"/usr/local/bin/ftpbridge\", \"probe\", \"http://127.0.0.1:{}/healthz\"]",
        admin.bind.port()
    );
    assert!(dockerfile.contains(&health), "HEALTHCHECK {health}");
    assert!(dockerfile.contains("HEALTHCHECK"));
}

fn copy_recursively(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_recursively(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_their_config() {
    let kustomization = yaml("docker/k8s/kustomization.yaml");
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        objects.extend(yaml_documents(&format!(
            "docker/k8s/{}",
            resource.as_str().unwrap()
        )));
    }
    let find = |kind: &str, name: &str| -> &Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config_map = find("ConfigMap", "ftpbridge");
    let deployment = find("Deployment", "ftpbridge");
    let service = find("Service", "ftpbridge");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The ConfigMap's proxy.toml with the Deployment's environment passes check.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, text(config_map, "/data/proxy.toml")).unwrap();
    let mut env = BTreeMap::new();
    for variable in container["env"].as_array().unwrap() {
        let value = match variable.get("value") {
            Some(value) => value.as_str().unwrap().to_owned(),
            None => {
                let key = text(variable, "/valueFrom/secretKeyRef/key");
                let secret = find("Secret", text(variable, "/valueFrom/secretKeyRef/name"));
                assert!(
                    secret["stringData"].get(key).is_some(),
                    "the Secret has {key}"
                );
                "from-the-secret".to_owned()
            }
        };
        env.insert(text(variable, "/name").to_owned(), value);
    }
    check(&file, &env);
    let config = load(&file, &env);

    // The config is mounted as a directory (subPath mounts never update), where args point.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "--config").unwrap() + 1]);
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        Path::new(text(mount, "/mountPath")),
        config_path.parent().unwrap()
    );
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "ftpbridge");

    // Probes reach the admin endpoint, which listens on the pod IP.
    let admin = config.admin.as_ref().expect("[admin]");
    assert!(
        !admin.bind.ip().is_loopback(),
        "kubelet probes connect to the pod IP"
    );
    let container_port = |name: &str| -> u16 {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}")) as u16
    };
    assert_eq!(container_port("admin"), admin.bind.port());
    assert_eq!(text(container, "/readinessProbe/httpGet/path"), "/readyz");
    assert_eq!(text(container, "/livenessProbe/httpGet/path"), "/healthz");
    assert_eq!(text(container, "/readinessProbe/httpGet/port"), "admin");
    assert_eq!(text(container, "/livenessProbe/httpGet/port"), "admin");

    // The Service exposes the control port and exactly the passive range.
    let listener = &config.listeners[0];
    assert_eq!(container_port("ftp"), listener.bind.port());
    let passive = listener.passive_ports.clone().expect("a passive range");
    let service_ports: BTreeSet<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("pasv-"))
        .map(|p| {
            assert_eq!(
                p["port"], p["targetPort"],
                "passive ports keep their number"
            );
            p["port"].as_u64().unwrap()
        })
        .collect();
    let expected: BTreeSet<u64> = passive.clone().map(u64::from).collect();
    assert_eq!(service_ports, expected);
    for port in passive {
        assert_eq!(container_port(&format!("pasv-{port}")), port);
    }
    assert_eq!(
        service["spec"]["externalTrafficPolicy"], "Local",
        "keeps client IPs"
    );
    assert_eq!(
        service["spec"]["sessionAffinity"], "ClientIP",
        "one client, one pod"
    );

    // Kubernetes waits for the drain before it kills the pod; nobody runs as root.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(Duration::from_secs(grace) > config.shutdown.drain_timeout);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
}

#[test]
fn the_systemd_unit_verifies_and_drains_longer_than_the_shipped_config() {
    let unit = read("docker/systemd/ftpbridge.service");
    let directive = |name: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(
        directive("ExecStart"),
        ["/usr/local/bin/ftpbridge run --config /etc/ftpbridge/proxy.toml"]
    );
    assert_eq!(
        directive("ExecReload"),
        [
            "/usr/local/bin/ftpbridge check --config /etc/ftpbridge/proxy.toml",
            "/bin/kill -HUP $MAINPID"
        ],
        "systemctl reload checks the file before it signals"
    );
    let config = load(&repo_path("proxy.toml"), &BTreeMap::new());
    // TimeoutStopSec in seconds, as the unit writes it.
    let stop: u64 = directive("TimeoutStopSec")[0]
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(Duration::from_secs(stop) > config.shutdown.drain_timeout);

    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "run scripts/test.sh (as root) to install systemd"
    );
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("ftpbridge.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/ftpbridge", BIN)).unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Names of the metric families on a live proxy's /metrics (`# TYPE`
/// lines), after a session that logs in, lists, uploads, downloads and fails
/// a DELE.
async fn exported_metric_families() -> BTreeSet<String> {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    let admin_section = "[admin]\nbind = \"127.0.0.1:0\"\n\n";
    std::fs::write(
        &file,
        format!("{admin_section}{}", alice_config(&sshd, "", "")),
    )
    .unwrap();
    let (proxy, admin) = Proxy::start_from_file(&file).await;
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    ftp.put_file("a.bin", &mut std::io::Cursor::new(vec![7u8; 1000]))
        .await
        .unwrap();
    ftp.list(None).await.unwrap();
    let mut stream = ftp.retr_as_stream("a.bin").await.unwrap();
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
        .await
        .unwrap();
    stream.finish().await.unwrap();
    assert!(ftp.rm("missing.bin").await.is_err());
    ftp.quit().await.unwrap();
    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    proxy.stop().await;
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `ftpbridge_…` names in a PromQL expression, with sample suffixes removed.
fn metric_families_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("ftpbridge_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_metrics_the_proxy_exports() {
    let exported = exported_metric_families().await;
    assert!(exported.len() >= 15, "{exported:?}");

    let dashboard: Value =
        serde_json::from_str(&read("docker/grafana/dashboards/ftpbridge.json")).unwrap();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let families = metric_families_in(expr);
            assert!(!families.is_empty(), "{expr}");
            for family in families {
                assert!(
                    exported.contains(&family),
                    "the dashboard queries {family}, which is not exported"
                );
                used.insert(family);
            }
        }
    }
    // Every exported family has a panel.
    let missing: Vec<&String> = exported.difference(&used).collect();
    assert!(missing.is_empty(), "no panel for {missing:?}");

    let alerts = yaml("docker/prometheus/alerts.yml");
    for rule in alerts["groups"][0]["rules"].as_array().unwrap() {
        for family in metric_families_in(rule["expr"].as_str().unwrap()) {
            assert!(
                exported.contains(&family),
                "alert {} uses {family}",
                rule["alert"]
            );
        }
    }
    // Grafana finds the dashboard where compose mounts it.
    let provider = yaml("docker/grafana/provisioning/dashboards/ftpbridge.yaml");
    let compose = read("docker/compose.yaml");
    assert!(compose.contains(&format!(
        "./grafana/dashboards:{}",
        text(&provider, "/providers/0/options/path")
    )));
}
