//! Shared helpers for the integration tests.

use kms_activation::FileTime;
use kms_activation::HResult;
use kms_activation::dcerpc::Ndr;
use kms_activation::host::{Answer, RequestContext, Responder};
use kms_activation::message::RequestBody;

/// A request context for calling responders directly.
pub fn context() -> RequestContext {
    let mut context = RequestContext::new(FileTime::from_ticks(0));
    context.call_id = 2;
    assert_eq!(context.ndr, Ndr::Ndr32);
    context
}

/// Wraps a responder and remembers every request it was asked about.
pub struct RecordingResponder<R> {
    pub inner: R,
    pub seen: Vec<RequestBody>,
}

impl<R> RecordingResponder<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            seen: Vec::new(),
        }
    }
}

impl<R: Responder> Responder for RecordingResponder<R> {
    fn respond(
        &mut self,
        now: FileTime,
        context: &RequestContext,
        request: &RequestBody,
    ) -> Result<Answer, HResult> {
        self.seen.push(request.clone());
        self.inner.respond(now, context, request)
    }
}

/// A child process (a `kms-host`, say) killed and reaped when the test ends,
/// however it ends.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `tracing` event: its level, target and fields as `name=value`
/// (the message as `message=…`).
#[derive(Debug, Clone)]
pub struct TracedEvent {
    pub level: tracing::Level,
    pub target: String,
    pub fields: Vec<String>,
}

impl TracedEvent {
    /// Whether any field contains `text`.
    pub fn mentions(&self, text: &str) -> bool {
        self.fields.iter().any(|field| field.contains(text))
    }
}

/// Every `tracing` event of this test process from the first call on.
///
/// A process-wide subscriber, installed once: a thread-scoped one
/// (`with_default`) races with other test threads registering the same
/// callsites and can miss every event. Events of all tests land here, so a
/// test looks for its own (a CMID, a message of its own). At most
/// [`MAX_TRACED`] are kept.
#[allow(
    clippy::expect_used,
    reason = "a second global subscriber is a bug of the tests"
)]
pub fn traced() -> &'static TraceLog {
    static LOG: std::sync::OnceLock<&'static TraceLog> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static TraceLog = Box::leak(Box::default());
        tracing::subscriber::set_global_default(log)
            .expect("no other global tracing subscriber in the test process");
        log
    })
}

/// Events kept by [`traced`] at most.
pub const MAX_TRACED: usize = 1_000_000;

/// The events [`traced`] keeps.
#[derive(Default)]
pub struct TraceLog(std::sync::Mutex<Vec<TracedEvent>>);

impl TraceLog {
    /// The events kept so far that satisfy `wanted`.
    pub fn events(&self, wanted: impl Fn(&TracedEvent) -> bool) -> Vec<TracedEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|event| wanted(event))
            .cloned()
            .collect()
    }
}

struct Fields(Vec<String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for &'static TraceLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let mut events = self.0.lock().unwrap();
        if events.len() < MAX_TRACED {
            events.push(TracedEvent {
                level: *event.metadata().level(),
                target: event.metadata().target().to_owned(),
                fields: fields.0,
            });
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Starts kms-host with `args` and reads its log until the "kms-host
/// ready" line, which is returned (`None` when the host exited first, or
/// was not ready within 60 s). The host logs at `warn`, its own lines (the
/// ready one among them) at `info`; every other line goes on to the test's
/// stderr, the host's lines after ready too (its stderr stays open). The
/// host keeps running: kill it when done.
pub fn kms_host_until_ready<I, S>(args: I) -> (std::process::Child, Option<String>)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::BufRead as _;
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_kms-host"))
        .args(args)
        .env("RUST_LOG", "warn,kms_host=info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = host.stderr.take().unwrap();
    let (ready, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            match ready.take_if(|_| line.contains("kms-host ready")) {
                Some(ready) => drop(ready.send(line)),
                None => eprintln!("kms-host: {line}"),
            }
        }
    });
    let ready = line.recv_timeout(std::time::Duration::from_secs(60)).ok();
    (host, ready)
}

/// Runs kms-host with `args`, which it must refuse before it starts: its
/// exit status (`Some(2)` for a bad argument) and its stderr.
pub fn kms_host_refused<I, S>(args: I) -> (Option<i32>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kms-host"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "kms-host started");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
