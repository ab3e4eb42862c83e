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
