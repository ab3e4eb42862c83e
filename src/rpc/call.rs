//! request, response and fault bodies, and reassembly of fragmented
//! requests (see [request, response and fault](crate::dcerpc#request-response-and-fault)
//! and [fragments](crate::dcerpc#fragments)).

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::{Error, PfcFlags, put_zeros};
use crate::guid;
use crate::wire::Reader;

/// The body of a request PDU ([layout](crate::dcerpc#request-body)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `alloc_hint`: the stub length the client announces (a hint only).
    pub alloc_hint: u32,
    /// `p_cont_id`: the presentation context, hence the NDR flavour.
    pub context_id: u16,
    /// `opnum`: 0 for `RequestActivation`.
    pub opnum: u16,
    /// The object UUID, present iff the header has
    /// [`PfcFlags::OBJECT_UUID`] (never for KMS).
    pub object: Option<Uuid>,
    /// The NDR stub.
    pub stub: Bytes,
}

impl Request {
    pub(crate) fn decode(r: &mut Reader<'_>, flags: PfcFlags) -> Result<Self, Error> {
        let alloc_hint = r.u32("request.alloc_hint")?;
        let context_id = r.u16("request.p_cont_id")?;
        let opnum = r.u16("request.opnum")?;
        let object = if flags.contains(PfcFlags::OBJECT_UUID) {
            Some(r.guid("request.object")?)
        } else {
            None
        };
        let stub = Bytes::copy_from_slice(r.take_rest());
        Ok(Self {
            alloc_hint,
            context_id,
            opnum,
            object,
            stub,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let object = if self.object.is_some() {
            guid::GUID_LEN
        } else {
            0
        };
        8usize
            .saturating_add(object)
            .saturating_add(self.stub.len())
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.alloc_hint);
        out.put_u16_le(self.context_id);
        out.put_u16_le(self.opnum);
        if let Some(object) = &self.object {
            out.put_slice(&guid::to_wire(object));
        }
        out.put_slice(&self.stub);
    }
}

/// The body of a response PDU ([layout](crate::dcerpc#response-body)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `alloc_hint`: the stub length.
    pub alloc_hint: u32,
    /// `p_cont_id`: the request's.
    pub context_id: u16,
    /// `cancel_count`: 0.
    pub cancel_count: u8,
    /// The NDR stub.
    pub stub: Bytes,
}

impl Response {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let alloc_hint = r.u32("response.alloc_hint")?;
        let context_id = r.u16("response.p_cont_id")?;
        let cancel_count = r.u8("response.cancel_count")?;
        r.skip(1, "response.reserved")?;
        let stub = Bytes::copy_from_slice(r.take_rest());
        Ok(Self {
            alloc_hint,
            context_id,
            cancel_count,
            stub,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        8usize.saturating_add(self.stub.len())
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.alloc_hint);
        out.put_u16_le(self.context_id);
        out.put_u8(self.cancel_count);
        out.put_u8(0);
        out.put_slice(&self.stub);
    }
}

/// The body of a fault PDU ([layout](crate::dcerpc#fault-body)): 16 bytes, no
/// stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// `alloc_hint` (vlmcsd writes 32).
    pub alloc_hint: u32,
    /// `p_cont_id` (vlmcsd writes 0).
    pub context_id: u16,
    /// `cancel_count`: 0.
    pub cancel_count: u8,
    /// The `nca_s_*` status, e.g. [`NCA_S_UNK_IF`](super::NCA_S_UNK_IF).
    pub status: u32,
}

impl Fault {
    const LEN: usize = 16;

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let alloc_hint = r.u32("fault.alloc_hint")?;
        let context_id = r.u16("fault.p_cont_id")?;
        let cancel_count = r.u8("fault.cancel_count")?;
        r.skip(1, "fault.reserved")?;
        let status = r.u32("fault.status")?;
        r.skip(4, "fault.reserved")?;
        r.finish("fault")?;
        Ok(Self {
            alloc_hint,
            context_id,
            cancel_count,
            status,
        })
    }

    pub(crate) const fn encoded_len() -> usize {
        Self::LEN
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.alloc_hint);
        out.put_u16_le(self.context_id);
        out.put_u8(self.cancel_count);
        out.put_u8(0);
        out.put_u32_le(self.status);
        put_zeros(out, 4);
    }
}

/// A request being reassembled.
#[derive(Debug)]
struct Partial {
    call_id: u32,
    context_id: u16,
    opnum: u16,
    object: Option<Uuid>,
    stub: BytesMut,
}

/// Joins the fragments of a request under a byte cap (see
/// [fragments](crate::dcerpc#fragments)).
///
/// KMS clients never fragment; a generous host may still accept fragments
/// of one call at a time, as DCE allows. On any error the partial call is
/// dropped and the reassembler is idle again (the host is expected to fault
/// and usually close the connection).
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use kms_activation::rpc::{PfcFlags, Reassembler, Request};
///
/// let part = |stub: &'static [u8]| Request {
///     alloc_hint: 6,
///     context_id: 0,
///     opnum: 0,
///     object: None,
///     stub: Bytes::from_static(stub),
/// };
/// let mut re = Reassembler::new(1024);
/// assert_eq!(re.push(7, PfcFlags::FIRST_FRAG, part(b"abc"))?, None);
/// let whole = re.push(7, PfcFlags::LAST_FRAG, part(b"def"))?.unwrap();
/// assert_eq!(&whole.stub[..], b"abcdef");
/// assert!(re.push(8, PfcFlags::LAST_FRAG, part(b"x")).is_err()); // no first fragment
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct Reassembler {
    max_stub_len: usize,
    partial: Option<Partial>,
}

impl Reassembler {
    /// A reassembler that refuses stubs longer than `max_stub_len` bytes in
    /// total ([`MAX_STUB_LEN`](super::MAX_STUB_LEN) is a sensible default).
    #[must_use]
    pub const fn new(max_stub_len: usize) -> Self {
        Self {
            max_stub_len,
            partial: None,
        }
    }

    /// The call id being reassembled, if any.
    #[must_use]
    pub fn pending_call(&self) -> Option<u32> {
        self.partial.as_ref().map(|p| p.call_id)
    }

    /// Drops any partial call.
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// Feeds one request fragment, with the `call_id` and `flags` of its PDU
    /// header.
    ///
    /// * `FIRST_FRAG | LAST_FRAG`: returned as is (when no call is pending).
    /// * `FIRST_FRAG` alone: starts a call; returns `None`.
    /// * neither: appended to the pending call; returns `None`.
    /// * `LAST_FRAG` alone: completes the pending call and returns it, with
    ///   the first fragment's context id, opnum and object, and `alloc_hint`
    ///   set to the reassembled stub length.
    ///
    /// # Errors
    ///
    /// [`Error::StubTooLarge`] when the stub (single or total) exceeds the
    /// cap, [`Error::InterleavedCall`] for a fragment (or a whole request)
    /// of another call while one is pending, [`Error::OrphanFragment`] for a
    /// middle or last fragment with no call pending, and
    /// [`Error::FragmentMismatch`] when a later fragment changes the context
    /// id, opnum or object. After an error no call is pending.
    pub fn push(
        &mut self,
        call_id: u32,
        flags: PfcFlags,
        request: Request,
    ) -> Result<Option<Request>, Error> {
        let result = self.push_inner(call_id, flags, request);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn push_inner(
        &mut self,
        call_id: u32,
        flags: PfcFlags,
        request: Request,
    ) -> Result<Option<Request>, Error> {
        let first = flags.contains(PfcFlags::FIRST_FRAG);
        let last = flags.contains(PfcFlags::LAST_FRAG);
        if let Some(partial) = &self.partial
            && (first || partial.call_id != call_id)
        {
            return Err(Error::InterleavedCall {
                expected: partial.call_id,
                got: call_id,
            });
        }
        if first {
            self.check_cap(request.stub.len())?;
            if last {
                return Ok(Some(request));
            }
            self.partial = Some(Partial {
                call_id,
                context_id: request.context_id,
                opnum: request.opnum,
                object: request.object,
                stub: BytesMut::from(&request.stub[..]),
            });
            return Ok(None);
        }
        let max = self.max_stub_len;
        let Some(partial) = self.partial.as_mut() else {
            return Err(Error::OrphanFragment { call_id });
        };
        if (partial.context_id, partial.opnum, partial.object)
            != (request.context_id, request.opnum, request.object)
        {
            return Err(Error::FragmentMismatch { call_id });
        }
        let len = partial.stub.len().saturating_add(request.stub.len());
        if len > max {
            return Err(Error::StubTooLarge { len, max });
        }
        partial.stub.extend_from_slice(&request.stub);
        if !last {
            return Ok(None);
        }
        let Some(done) = self.partial.take() else {
            return Ok(None);
        };
        let stub = done.stub.freeze();
        Ok(Some(Request {
            alloc_hint: u32::try_from(stub.len()).unwrap_or(u32::MAX),
            context_id: done.context_id,
            opnum: done.opnum,
            object: done.object,
            stub,
        }))
    }

    fn check_cap(&self, len: usize) -> Result<(), Error> {
        if len > self.max_stub_len {
            return Err(Error::StubTooLarge {
                len,
                max: self.max_stub_len,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(call_stub: &[u8]) -> Request {
        Request {
            alloc_hint: 0,
            context_id: 1,
            opnum: 0,
            object: None,
            stub: Bytes::copy_from_slice(call_stub),
        }
    }

    const FIRST: PfcFlags = PfcFlags::FIRST_FRAG;
    const MID: PfcFlags = PfcFlags(0);
    const LAST: PfcFlags = PfcFlags::LAST_FRAG;

    #[test]
    fn single_fragment_passes_through() {
        let mut re = Reassembler::new(100);
        let req = Request {
            alloc_hint: 77,
            ..part(b"whole")
        };
        assert_eq!(re.push(3, PfcFlags::SINGLE, req.clone()), Ok(Some(req)));
        assert_eq!(re.pending_call(), None);
    }

    #[test]
    fn two_and_three_fragments_reassemble() {
        let mut re = Reassembler::new(100);
        assert_eq!(re.push(3, FIRST, part(b"ab")), Ok(None));
        assert_eq!(re.pending_call(), Some(3));
        let done = re.push(3, LAST, part(b"cd")).unwrap().unwrap();
        assert_eq!(&done.stub[..], b"abcd");
        assert_eq!(done.alloc_hint, 4);

        assert_eq!(re.push(4, FIRST, part(b"ab")), Ok(None));
        assert_eq!(re.push(4, MID, part(b"cd")), Ok(None));
        let done = re.push(4, LAST, part(b"ef")).unwrap().unwrap();
        assert_eq!(&done.stub[..], b"abcdef");
        assert_eq!(done.context_id, 1);
        assert_eq!(re.pending_call(), None);
    }

    #[test]
    fn over_cap_is_refused() {
        let mut re = Reassembler::new(5);
        assert_eq!(
            re.push(1, PfcFlags::SINGLE, part(b"123456")),
            Err(Error::StubTooLarge { len: 6, max: 5 })
        );
        assert_eq!(re.push(1, FIRST, part(b"123")), Ok(None));
        assert_eq!(
            re.push(1, MID, part(b"456")),
            Err(Error::StubTooLarge { len: 6, max: 5 })
        );
        assert_eq!(re.pending_call(), None);
    }

    #[test]
    fn interleaved_and_orphan_fragments_are_refused() {
        let mut re = Reassembler::new(100);
        assert_eq!(
            re.push(1, MID, part(b"x")),
            Err(Error::OrphanFragment { call_id: 1 })
        );
        assert_eq!(
            re.push(1, LAST, part(b"x")),
            Err(Error::OrphanFragment { call_id: 1 })
        );
        re.push(1, FIRST, part(b"x")).unwrap();
        assert_eq!(
            re.push(2, LAST, part(b"y")),
            Err(Error::InterleavedCall {
                expected: 1,
                got: 2
            })
        );
        re.push(1, FIRST, part(b"x")).unwrap();
        assert_eq!(
            re.push(2, PfcFlags::SINGLE, part(b"y")),
            Err(Error::InterleavedCall {
                expected: 1,
                got: 2
            })
        );
        re.push(1, FIRST, part(b"x")).unwrap();
        assert_eq!(
            re.push(1, FIRST, part(b"x")),
            Err(Error::InterleavedCall {
                expected: 1,
                got: 1
            })
        );
        re.push(1, FIRST, part(b"x")).unwrap();
        let mut other_op = part(b"y");
        other_op.opnum = 1;
        assert_eq!(
            re.push(1, LAST, other_op),
            Err(Error::FragmentMismatch { call_id: 1 })
        );
        assert_eq!(re.pending_call(), None);
    }
}
