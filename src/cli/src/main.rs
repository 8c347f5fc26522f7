//! `webhook-guard`: sign a delivery for any preset or custom scheme, verify a saved request,
//! and check a plugin configuration, all with the same core the filter runs.

mod pathcost;
mod request;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use webhook_guard_core::compile::{self, ConfigError};
use webhook_guard_core::config::{KeyEncoding, Provider, TimestampUnit};
use webhook_guard_core::decrypt::{seal_gcm, seal_lark, Cipher, NonceSource};
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::scheme::{Scheme, SigFormat};
use webhook_guard_core::sign::{sign, sign_adyen, SignInput};
use webhook_guard_core::template::Part;
use webhook_guard_core::{presets, Guard, RequestInfo, Route, RouteInfo};

#[derive(Parser)]
#[command(name = "webhook-guard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a plugin configuration with the filter's own compiler; list its policies.
    CheckConfig {
        /// The JSON document given to the filter as `configuration`.
        file: PathBuf,
    },
    /// Print the headers that sign a body, for a preset or a policy of a config file.
    Sign(Box<SignArgs>),
    /// Run a saved HTTP/1.1 request (request line, headers, blank line, body) through a config.
    Verify {
        /// Plugin configuration; `env` secrets are read from this process's environment.
        #[arg(long)]
        config: PathBuf,
        /// The saved request.
        #[arg(long)]
        request: PathBuf,
        /// Clock to verify at (Unix seconds); default now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Measure HMAC-SHA256 throughput of the core (MB/s). Built for wasm32-wasip1 and run by
    /// Node (V8, Envoy's wasm engine) it shows the filter's hashing speed; natively, the host's.
    #[command(hide = true)]
    HmacThroughput {
        #[arg(long, default_value_t = 131072)]
        size: usize,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Measure the core's own CPU time per request (µs) on the unmatched, accepted, replay and
    /// invalid paths of a config's first policy, against a near-free host: our code's share
    /// of a request's cost, without the proxy (run under Node's WASI for the wasm build's).
    #[command(hide = true)]
    PathCost {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 20000)]
        requests: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Compile as the native module does (its in-process store) instead of the wasm
        /// build (the store in shared data).
        #[arg(long)]
        native: bool,
    },
}

#[derive(clap::Args)]
struct SignArgs {
    /// A preset: github, stripe, slack, shopify, standard-webhooks, svix, zoom, paddle, twitch,
    /// pagerduty, linear, intercom, bitbucket, jira, gitlab, paystack, razorpay, lemon-squeezy,
    /// vercel, woocommerce, typeform, mux, sentry, calendly, meta; mailgun prints the body to
    /// send (the signature block around the event data given as the body; --id is the token);
    /// adyen prints the notification given as the body with every item's hmacSignature set (the
    /// key in hex; the filter takes one item per notification); vonage prints the `authorization: Bearer <JWT>` header (--id is the jti);
    /// plivo (with --config and --policy, for its public_origin) signs a form body and the
    /// --path, --id being the nonce; lark signs a body already sealed (or, with --config,
    /// --policy and --encrypt, seals the event first), its timestamp and nonce headers made up
    /// unless given with --header.
    /// Public-key presets such as discord and telnyx are signed with the provider's
    /// private key, not here.
    #[arg(long, conflicts_with_all = ["config", "policy"])]
    provider: Option<String>,
    /// A plugin configuration (for custom schemes)...
    #[arg(long, requires = "policy")]
    config: Option<PathBuf>,
    /// ...and the policy in it whose scheme signs.
    #[arg(long)]
    policy: Option<String>,
    /// The secret text (as the provider shows it, e.g. whsec_...).
    #[arg(long, conflicts_with = "secret_env")]
    secret: Option<String>,
    /// Environment variable holding the secret.
    #[arg(long)]
    secret_env: Option<String>,
    /// Body to sign, from a file (`-` for stdin)...
    #[arg(long, conflicts_with = "body")]
    body_file: Option<PathBuf>,
    /// ...or given inline.
    #[arg(long)]
    body: Option<String>,
    /// Timestamp in the scheme's unit; default now.
    #[arg(long)]
    timestamp: Option<u64>,
    /// Delivery id (Standard Webhooks `webhook-id`, GitHub `X-GitHub-Delivery`, ...).
    #[arg(long)]
    id: Option<String>,
    #[arg(long, default_value = "POST")]
    method: String,
    #[arg(long, default_value = "/")]
    path: String,
    /// Another signed header, as NAME:VALUE (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = Format::Headers)]
    format: Format,
    /// Encrypt the body first, as the policy's `decrypt` expects (AES-256-GCM envelope with a
    /// random nonce, or Lark's AES-256-CBC envelope with a random IV), and sign the envelope;
    /// needs --config, --policy and --out.
    #[arg(long, requires_all = ["config", "policy", "out"])]
    encrypt: bool,
    /// The encryption key text (as in the policy's `decrypt.keys`); default: its first key.
    #[arg(long, requires = "encrypt", conflicts_with = "encryption_key_env")]
    encryption_key: Option<String>,
    /// Environment variable holding the encryption key.
    #[arg(long, requires = "encrypt")]
    encryption_key_env: Option<String>,
    /// Where to write the envelope (the body to send) with --encrypt.
    #[arg(long, requires = "encrypt")]
    out: Option<PathBuf>,
}

/// A header name and value to send.
type Header = (String, String);

/// What `--encrypt` needs from the policy: its cipher and its current key.
struct Sealing {
    cipher: Cipher,
    key: Option<Vec<u8>>,
    key_encoding: KeyEncoding,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// `Name: value` lines.
    Headers,
    /// `-H 'Name: value'` arguments for curl.
    Curl,
    /// A JSON object.
    Json,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("expected NAME:VALUE")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

fn load(path: &PathBuf) -> Result<Guard, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    compile::compile(&bytes, &env_lookup).map_err(|e: ConfigError| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Sign(args) => run_sign(&args),
        Command::Verify {
            config,
            request,
            at,
        } => verify(&config, &request, at),
        Command::HmacThroughput { size, seconds } => hmac_throughput(size, seconds),
        Command::PathCost {
            config,
            size,
            requests,
            rounds,
            native,
        } => pathcost::load(&config, native)
            .and_then(|g| pathcost::run(&g, size, requests, rounds))
            .map(|line| {
                println!("{line}");
                ExitCode::SUCCESS
            }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("webhook-guard: {message}");
            ExitCode::from(2)
        }
    }
}

fn check_config(file: &PathBuf) -> Result<ExitCode, String> {
    let guard = match load(file) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{}: valid, {} policies",
        file.display(),
        guard.policies().len()
    );
    for p in guard.policies() {
        let dedup = p.dedup.as_ref().map_or("off".to_string(), |d| {
            let store = d.remote.as_ref().map_or("local store".to_string(), |r| {
                format!(
                    "etcd store (cluster {}, prefix {}, timeout {} ms, on error {})",
                    r.cluster,
                    r.prefix(),
                    r.timeout_ms,
                    if r.fail_open { "allow" } else { "deny" }
                )
            });
            format!(
                "key {}, {}, unknown outcomes {}, {store} share {} entries",
                d.source.describe(),
                if d.acknowledge {
                    "acknowledge duplicates"
                } else {
                    "reject duplicates"
                },
                if d.release_unknown {
                    "released"
                } else {
                    "kept"
                },
                d.capacity,
            )
        });
        let decrypt = p.decrypt.as_ref().map_or(String::new(), |d| {
            let (loaded, configured) = d.key_counts();
            format!(", decrypt: aes-256-gcm, keys {loaded}/{configured} usable")
        });
        println!(
            "  {:<16} {}, secrets {}/{} usable, tolerance {} s, max body {} B, dedup: {}{decrypt}",
            p.name,
            p.methods.join("/"),
            p.usable_secrets(),
            p.secrets_configured,
            p.tolerance_ms / 1000,
            p.max_body_bytes,
            dedup
        );
    }
    for (level, notice) in guard.notices() {
        println!("  {level:?}: {notice}");
    }
    Ok(ExitCode::SUCCESS)
}

fn provider_scheme(name: &str) -> Result<Scheme, String> {
    let provider: Provider = serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| {
            format!("unknown provider '{name}' (see docs/providers.md for the preset names)")
        })?;
    presets::scheme(provider, false)
        .ok_or_else(|| {
            "custom, and presets that need policy settings (square, twilio, hubspot, plivo), sign with --config and --policy"
                .to_string()
        })
}

fn run_sign(a: &SignArgs) -> Result<ExitCode, String> {
    let mut sealing = None;
    let (scheme, policy_key) = match (&a.provider, &a.config, &a.policy) {
        (Some(p), _, _) => (provider_scheme(p)?, None),
        (None, Some(config), Some(name)) => {
            let guard = load(config)?;
            let p = guard
                .policies()
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| format!("no policy '{name}' in {}", config.display()))?;
            sealing = p.decrypt.as_ref().map(|d| Sealing {
                cipher: d.cipher.clone(),
                key: d.first_key().map(<[u8]>::to_vec),
                key_encoding: d.key_encoding,
            });
            (p.scheme.clone(), p.first_key().map(<[u8]>::to_vec))
        }
        _ => return Err("pass --provider, or --config and --policy".into()),
    };
    let secret_text = match (&a.secret, &a.secret_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => Some(std::env::var(var).map_err(|_| format!("{var} is not set"))?),
        (None, None) => None,
    };
    let key = match secret_text {
        Some(text) => scheme
            .key_encoding
            .decode(&text)
            .ok_or("the secret is not valid for this scheme's key encoding")?,
        None => policy_key.ok_or("pass --secret or --secret-env")?,
    };
    let body = match (&a.body_file, &a.body) {
        (Some(p), _) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| e.to_string())?;
            buf
        }
        (Some(p), _) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        (None, Some(b)) => b.clone().into_bytes(),
        (None, None) => return Err("pass --body or --body-file".into()),
    };
    let mut extra = Vec::new();
    let body = if a.encrypt {
        let sealing = sealing.ok_or("--encrypt: the policy has no \"decrypt\"")?;
        let (envelope, nonce_header) = seal(a, &sealing, &body)?;
        if let Some(out) = &a.out {
            std::fs::write(out, &envelope).map_err(|e| format!("{}: {e}", out.display()))?;
        }
        extra.extend(nonce_header);
        envelope
    } else {
        body
    };
    let timestamp = a.timestamp.or_else(|| {
        scheme.timestamp.as_ref().map(|t| match t.unit {
            TimestampUnit::Seconds | TimestampUnit::Rfc3339 => now_ms() / 1000,
            TimestampUnit::Milliseconds => now_ms(),
        })
    });
    // Lark signs its timestamp and nonce headers: made up here unless given.
    let mut signed_headers = a.headers.clone();
    for (name, value) in [
        ("x-lark-request-timestamp", (now_ms() / 1000).to_string()),
        (
            "x-lark-request-nonce",
            random_bytes::<8>()?
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
    ] {
        let signed = scheme
            .template
            .iter()
            .any(|p| matches!(p, Part::Header(h) if h == name));
        if signed
            && !signed_headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            signed_headers.push((name.to_string(), value));
        }
    }
    let input = SignInput {
        body: &body,
        timestamp,
        id: a.id.as_deref(),
        method: &a.method,
        path: &a.path,
        headers: &signed_headers,
    };
    if scheme
        .sources
        .first()
        .is_some_and(|s| matches!(s.format, SigFormat::AdyenItems))
    {
        // Adyen: every notification item gets its hmacSignature; the body is what to post.
        let signed = sign_adyen(&key, &body)?;
        println!("{}", String::from_utf8_lossy(&signed));
        return Ok(ExitCode::SUCCESS);
    }
    let mut headers = sign(&scheme, &key, &input)?;
    if scheme
        .sources
        .first()
        .is_some_and(|s| matches!(s.format, SigFormat::BodyFields))
    {
        // Mailgun: the signature block goes in the body, next to the event (the body given).
        println!("{}", mailgun_body(&headers, &body)?);
        return Ok(ExitCode::SUCCESS);
    }
    headers.extend(extra);
    match a.format {
        Format::Headers => headers.iter().for_each(|(k, v)| println!("{k}: {v}")),
        Format::Curl => {
            let args: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("-H '{k}: {v}'"))
                .collect();
            println!("{}", args.join(" "));
        }
        Format::Json => {
            let map: serde_json::Map<String, serde_json::Value> = headers
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            println!("{}", serde_json::Value::Object(map));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `{"signature": {"timestamp", "token", "signature"}, "event-data": <body>}`, as Mailgun posts.
fn mailgun_body(fields: &[Header], event: &[u8]) -> Result<String, String> {
    let event: serde_json::Value = serde_json::from_slice(event)
        .map_err(|e| format!("the body (the event data) is not JSON: {e}"))?;
    let block: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Ok(serde_json::json!({"signature": block, "event-data": event}).to_string())
}

/// The body as the policy's sender would encrypt it, and the nonce header when the policy
/// reads the nonce from one.
fn seal(
    a: &SignArgs,
    sealing: &Sealing,
    plaintext: &[u8],
) -> Result<(Vec<u8>, Option<Header>), String> {
    let text = match (&a.encryption_key, &a.encryption_key_env) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(var)) => Some(std::env::var(var).map_err(|_| format!("{var} is not set"))?),
        (None, None) => None,
    };
    let key = match text {
        Some(t) => sealing
            .cipher
            .derive_key(sealing.key_encoding, &t)
            .ok_or("the encryption key is not a 32-byte key in the policy's key_encoding")?,
        None => sealing
            .key
            .clone()
            .ok_or("pass --encryption-key or --encryption-key-env")?,
    };
    let (ciphertext_field, nonce) = match &sealing.cipher {
        Cipher::AesGcm {
            ciphertext_field,
            nonce,
        } => (ciphertext_field, nonce),
        Cipher::LarkCbc => {
            let iv = random_bytes::<16>()?;
            let envelope = seal_lark(&key, iv, plaintext).ok_or("could not encrypt")?;
            return Ok((envelope, None));
        }
    };
    let random = random_bytes::<12>()?;
    let (field, header) = match nonce {
        NonceSource::Field(f) => (Some(f.as_str()), None),
        NonceSource::Header(h) => (None, Some(h.clone())),
    };
    let (envelope, nonce_b64) =
        seal_gcm(&key, random, plaintext, ciphertext_field, field).ok_or("could not encrypt")?;
    Ok((envelope, header.map(|h| (h, nonce_b64))))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?,
        &mut out,
    )
    .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(out)
}

fn verify(config: &PathBuf, request: &PathBuf, at: Option<u64>) -> Result<ExitCode, String> {
    let guard = load(config)?;
    let raw = std::fs::read(request).map_err(|e| format!("{}: {e}", request.display()))?;
    let req = request::parse(&raw)?;
    let now = at.map_or_else(now_ms, |s| s.saturating_mul(1000));
    let host = MemHost::new(guard.counter_names(), now);
    let route = RouteInfo {
        route_name: None,
        authority: &req.authority,
        path: &req.path,
        route_policy: None,
    };
    let policy = match guard.route(&host, &route) {
        Route::Pass => {
            println!("unmatched: no policy matches {} (default allow)", req.path);
            return Ok(ExitCode::SUCCESS);
        }
        Route::Reject(r) => {
            println!("{} {}", r.status, r.reason);
            return Ok(ExitCode::FAILURE);
        }
        Route::Verify(i) => i,
    };
    let name = guard.policy(policy).map_or("?", |p| p.name.as_str());
    let info = RequestInfo {
        route_name: None,
        method: req.method.clone(),
        path: req.path.clone(),
    };
    let outcome = guard
        .begin(&host, policy, info, &req.headers)
        .and_then(|pending| guard.finish(&host, &pending, &req.body));
    match outcome {
        Ok(a) => {
            println!("accepted by policy '{name}' (secret #{})", a.key_index + 1);
            Ok(ExitCode::SUCCESS)
        }
        Err(r) => {
            println!(
                "{} {} (policy '{name}'): {}",
                r.status,
                r.reason,
                r.reason.describe()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hmac_throughput(size: usize, seconds: f64) -> Result<ExitCode, String> {
    use webhook_guard_core::config::Algorithm;
    use webhook_guard_core::verify::compute_mac;
    let body = vec![b'x'; size];
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    let mut sink = 0u8;
    while start.elapsed().as_secs_f64() < seconds {
        let mac = compute_mac(
            Algorithm::HmacSha256,
            b"benchmark-key",
            &[b"1700000000.", &body],
        )
        .ok_or("mac failed")?;
        sink ^= mac.first().copied().unwrap_or(0);
        rounds = rounds.saturating_add(1);
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (rounds as f64) * (size as f64) / 1e6;
    println!(
        "{{\"size\":{size},\"rounds\":{rounds},\"mb_per_s\":{:.1},\"sink\":{sink}}}",
        mb / secs
    );
    Ok(ExitCode::SUCCESS)
}
