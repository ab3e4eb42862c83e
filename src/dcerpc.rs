//! The DCE/RPC layer under KMS: the two types of it that the public API
//! shows, and how KMS uses the protocol.
//!
//! The PDU codecs, context negotiation, fragment reassembly and NDR stubs
//! are internal to the engines ([`host::HostConnection`](crate::host::HostConnection),
//! [`client::ClientConnection`](crate::client::ClientConnection) and the
//! `dissect` module); what reaches users is
//!
//! * [`Ndr`], the transfer syntax a request travelled in
//!   ([`host::RequestContext::ndr`](crate::host::RequestContext::ndr)), and
//! * [`Error`], the RPC-layer errors inside
//!   [`host::HostError::Rpc`](crate::host::HostError::Rpc),
//!   [`client::ClientError::Rpc`](crate::client::ClientError::Rpc) and
//!   [`crate::Error::Rpc`], and
//! * [`PduType`], the type of a PDU that came when another was expected
//!   ([`client::ClientError::UnexpectedPdu`](crate::client::ClientError::UnexpectedPdu)).
//!
//! # The DCE/RPC layer of KMS
//!
//! KMS activation is a single remote procedure call carried by
//! connection-oriented DCE/RPC 5.0 (The Open Group's C706, with Microsoft's
//! MS-RPCE extensions) over plain TCP, without any authentication. The
//! sections below cover the part of DCE/RPC a KMS client and host actually
//! exchange. All integers are little-endian. Unless a table says otherwise,
//! offsets are decimal and count from the first byte of the PDU.
//!
//! ## The KMS interface
//!
//! The host exports one interface (`KMS_INTERFACE`): UUID
//! `51c82175-844e-4750-b0d8-ec255555bc06`, version 1.0. It has a single
//! operation, `RequestActivation`, opnum 0. Its parameters, in call order:
//!
//! | direction | parameter | IDL type | what it holds |
//! |---|---|---|---|
//! | in | `requestSize` | `int` | the length N of the KMS request |
//! | in | `request` | `byte *`, `size_is(requestSize)` | the KMS request (N bytes) |
//! | out | `responseSize` | `int *` | the length M of the KMS response |
//! | out | `response` | `byte **`, `size_is(, *responseSize)` | the KMS response (M bytes), or NULL |
//! | return | — | `int` | an HRESULT |
//!
//! Both byte arrays are KMS messages ([`crate::message`]); this layer treats
//! them as opaque. The return value is 0 when a response comes back. When the
//! host refuses to activate, the return value is the refusal's HRESULT and
//! the response pointer is NULL (see [the error stub](#output-stub-on-error)).
//! Activation refusals always travel that way, inside an ordinary response
//! PDU; [fault PDUs](#fault-body) are reserved for failures of the RPC
//! machinery itself.
//!
//! ## Session flow
//!
//! A client connects to the host on TCP port **1688** (the default; clients
//! can be pointed at any port) and runs one RPC association on that
//! connection:
//!
//! 1. **bind** → **`bind_ack`**: the client proposes presentation contexts (the
//!    KMS interface with one transfer syntax each); the host answers every
//!    one of them ([context negotiation](#context-negotiation)).
//! 2. Optionally **`alter_context`** → **`alter_context_resp`**, once or more,
//!    to propose further contexts on the same association; typically to get
//!    an NDR32 context after the host chose NDR64.
//! 3. Any number of **request** → **response** (or **fault**) calls, strictly
//!    one at a time: the client waits for each reply before it sends the next
//!    request. Several activation requests on one connection are normal.
//!
//! A reply does not end the session: the connection stays up for further
//! calls, and it is the client that hangs up, unless the host drops an idle
//! connection first (vlmcsd, the reference emulator, allows 30 seconds of
//! silence).
//!
//! The usual offers, and what a host with NDR64 enabled makes of them:
//!
//! | the bind offers | the host answers | calls then use |
//! |---|---|---|
//! | context 0 NDR32, 1 NDR64, 2 BTFN | 0 rejected, 1 accepted with NDR64, 2 acknowledged | vlmcs sends an `alter_context` with context 0 NDR32 alone (accepted); its first request goes on context 0 (NDR32), later ones on context 1 (NDR64) |
//! | context 0 NDR32, 1 NDR64 | 0 rejected, 1 accepted with NDR64 | as above |
//! | NDR32, BTFN | NDR32 accepted, BTFN acknowledged | NDR32 only |
//! | NDR32 alone | accepted | NDR32 only |
//!
//! (BTFN is [bind-time feature negotiation](#transfer-syntaxes).) That vlmcs
//! makes its first call of a connection in NDR32 is a habit of that client,
//! not a rule of the protocol: another client may call over NDR64 at once,
//! and a host must serve each request in whichever accepted context it names.
//!
//! ## Common header
//!
//! Every PDU starts with the same 16 bytes (`HEADER_LEN`):
//!
//! | offset | size | field | value in KMS traffic |
//! |---|---|---|---|
//! | 0 | 1 | `rpc_vers` | 5 |
//! | 1 | 1 | `rpc_vers_minor` | 0 |
//! | 2 | 1 | `PTYPE` | the PDU type (`PduType`) |
//! | 3 | 1 | `pfc_flags` | `PfcFlags`, see below |
//! | 4 | 4 | `packed_drep` | `10 00 00 00` (`DREP`): little-endian integers, ASCII characters, IEEE floats |
//! | 8 | 2 | `frag_length` | size of the whole PDU, these 16 bytes included |
//! | 10 | 2 | `auth_length` | 0; KMS never authenticates |
//! | 12 | 4 | `call_id` | see [call and context ids](#call-and-context-ids) |
//!
//! `PTYPE` values KMS uses: 0 request, 2 response, 3 fault, 11 bind,
//! 12 `bind_ack`, 13 `bind_nak`, 14 `alter_context`, 15 `alter_context_resp`.
//!
//! `pfc_flags` bits: 0x01 first fragment, 0x02 last fragment, 0x04 pending
//! cancel (in bind-type PDUs: header signing supported), 0x08 reserved,
//! 0x10 concurrent multiplexing, 0x20 did not execute, 0x40 "maybe"
//! semantics, 0x80 an object UUID follows. The values found in KMS traffic:
//!
//! | PDU | `pfc_flags` |
//! |---|---|
//! | bind | 0x13 (first, last, multiplexing), or 0x03 from a client that does not ask for multiplexing |
//! | `bind_ack` | whatever the bind carried, copied |
//! | `alter_context` | 0x13 |
//! | `alter_context_resp` | 0x03 |
//! | request, response | 0x03 |
//! | fault | 0x23 (first, last, did not execute) |
//!
//! Every KMS PDU is a whole, single [fragment](#fragments).
//!
//! ## Bind and `alter_context`
//!
//! Both PDUs have the same body (`Bind`); a bind opens the association and
//! an `alter_context` proposes more contexts on it.
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 16 | 2 | `max_xmit_frag` | largest fragment the client will send (vlmcs and Windows: 5840) |
//! | 18 | 2 | `max_recv_frag` | largest fragment it accepts (likewise 5840) |
//! | 20 | 4 | `assoc_group_id` | 0 from clients |
//! | 24 | 1 | `n_context_elem` | number of presentation contexts proposed |
//! | 25 | 3 | reserved | 0 |
//! | 28 | … | the contexts | `n_context_elem` elements, back to back |
//!
//! A presentation context element (`ContextElement`); offsets count from
//! the start of the element:
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 0 | 2 | `p_cont_id` | the context id later requests name (vlmcs: 0, 1, 2 in order) |
//! | 2 | 1 | `n_transfer_syn` | number of transfer syntaxes; 1 in practice |
//! | 3 | 1 | reserved | 0 |
//! | 4 | 16 | abstract syntax UUID | the KMS interface: `75 21 c8 51 4e 84 50 47 b0 d8 ec 25 55 55 bc 06` on the wire |
//! | 20 | 4 | interface version | u16 major (1), then u16 minor (0) |
//! | 24 | 20 each | transfer syntaxes | a 16-byte UUID, then a u32 version |
//!
//! An element is therefore 24 + 20·n bytes: 44 with the single transfer
//! syntax clients send. DCE allows a list, and a host should at least parse
//! one structurally (vlmcsd assumes a single syntax). UUIDs travel in
//! Microsoft's mixed-endian order ([GUID byte order](crate::message#primitive-types)).
//!
//! ### Transfer syntaxes
//!
//! | syntax | UUID, then its wire bytes | version | here |
//! |---|---|---|---|
//! | NDR 2.0 ("NDR32") | `8a885d04-1ceb-11c9-9fe8-08002b104860`: `04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60` | 2 | `NDR32` |
//! | NDR64 | `71710533-beba-4937-8319-b5dbef9ccc36`: `33 05 71 71 ba be 37 49 83 19 b5 db ef 9c cc 36` | 1 | `NDR64` |
//! | bind-time feature negotiation ("BTFN") | `6cb71c2c-9812-4540-…`: `2c 1c b7 6c 12 98 40 45`, then 8 bytes of feature bits | 1 | `TransferSyntax::BindTimeFeatures` |
//!
//! A BTFN entry is not a fixed UUID: only its first 8 wire bytes identify it,
//! and its last 8 bytes are a u64 bitmask of the features the client asks
//! for: 0x1 security-context multiplexing, 0x2 keep the connection when a
//! call is orphaned. Clients (vlmcs, and Windows as far as is known) ask for
//! both, i.e. mask 3 (`6cb71c2c-9812-4540-0300-000000000000`), and expect
//! mask 3 back.
//!
//! ## Context negotiation
//!
//! A host answers each proposed context separately, in the order proposed,
//! with one [result](#context-results) per element. Windows 8 and later
//! hosts, and vlmcsd emulating them, follow the rules below, which
//! `negotiate` implements (when an element lists several transfer syntaxes,
//! the first acceptable one wins):
//!
//! | the element proposes | accepted when the host… | result (reason) |
//! |---|---|---|
//! | an abstract syntax other than the KMS interface | — | provider rejection (1: abstract syntax not supported) |
//! | NDR64 | supports NDR64 | acceptance, NDR64 version 1 |
//! | NDR64 | speaks NDR32 only | provider rejection (2: transfer syntaxes not supported) |
//! | NDR32, and another element of the same PDU proposes NDR64 | supports NDR64 | provider rejection (2) |
//! | NDR32, and no element of the PDU proposes NDR64 | — | acceptance, NDR32 version 2 |
//! | BTFN with feature mask m | supports BTFN | `negotiate_ack`, reason = m AND 3 |
//! | BTFN | does not support BTFN | provider rejection (2) |
//! | any other transfer syntax | — | provider rejection (2) |
//!
//! vlmcsd does not look at the interface version; `negotiate` is stricter
//! and rejects a major version other than 1 with reason 1.
//!
//! The rule that refuses NDR32 next to NDR64 is what makes clients send an
//! `alter_context`: a client that offered both in its bind and wants to make
//! a call in NDR32 proposes NDR32 again, alone, and that is accepted. Plain
//! DCE would allow a host to accept both contexts at once; a client such as
//! vlmcs then simply skips the `alter_context`.
//!
//! For the lifetime of the connection the host remembers which transfer
//! syntax each accepted context id stands for; an `alter_context` adds to
//! that table and leaves the association group unchanged. The stub of a
//! request is read in whatever syntax its context id maps to. A request naming an
//! id that was never accepted (also a request before any bind) is answered
//! with a fault, `nca_s_unk_if` (`NCA_S_UNK_IF`). vlmcsd is laxer (it also
//! serves requests on NDR32 contexts it rejected); clients must not count on
//! that.
//!
//! ## Bind acknowledgement
//!
//! A `bind_ack` answers a bind and an `alter_context_resp` answers an
//! `alter_context`. Both have the same body (`BindAck`):
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 16 | 2 | `max_xmit_frag` | the client's value, echoed |
//! | 18 | 2 | `max_recv_frag` | echoed likewise |
//! | 20 | 4 | `assoc_group_id` | chosen by the host, non-zero; an `alter_context_resp` repeats it |
//! | 24 | 2 | secondary address length L | counts the trailing NUL; 0 in an `alter_context_resp` |
//! | 26 | L | secondary address | `bind_ack`: the host's listening TCP port in ASCII decimal plus a NUL, e.g. `"1688\0"` (L = 5) |
//! | 26 + L | 0–3 | pad | brings the next field to an offset divisible by 4 |
//! | after the pad | 1 | `n_results` | equals the proposal's `n_context_elem` |
//! | +1 | 3 | reserved | 0 |
//! | +4 | 24 each | results | one per proposed context, same order |
//!
//! The pad is (−(26 + L)) mod 4 bytes long: 2 for L = 0, 1 for L = 5
//! (`"1688\0"`), none for L = 6 (`"11688\0"`). Its contents are unspecified
//! (vlmcsd leaves whatever was in its buffer), so a reader must skip it by
//! computing its length and ignore the bytes.
//!
//! ### Context results
//!
//! Each result (`ContextResult`) is 24 bytes:
//!
//! | offset | size | field | values |
//! |---|---|---|---|
//! | 0 | 2 | result (`ResultKind`) | 0 acceptance, 1 user rejection, 2 provider rejection, 3 `negotiate_ack` (BTFN) |
//! | 2 | 2 | reason | rejections: 0 not specified, 1 abstract syntax not supported, 2 proposed transfer syntaxes not supported, 3 local limit exceeded; acceptance: 0; `negotiate_ack`: the granted feature mask |
//! | 4 | 16 | transfer syntax UUID | the accepted syntax; all zero for rejections and `negotiate_ack` |
//! | 20 | 4 | transfer syntax version | 2 for NDR32, 1 for NDR64; 0 for rejections and `negotiate_ack` |
//!
//! ## Bind refusal
//!
//! A `bind_nak` (`BindNak`) refuses a bind as a whole. Its body: a u16
//! reject reason at offset 16 (0 not specified, 1 temporary congestion,
//! 2 local limit exceeded, 4 protocol version not supported, …), a u8 count
//! of supported protocol versions at 18, then that many (u8 major, u8 minor)
//! pairs. KMS rarely needs it: vlmcsd never sends one (it answers context by
//! context, or closes the connection), and vlmcs takes any reply other than a
//! `bind_ack` as a failure. The case where it fits is a bind in an RPC
//! version other than 5.0, answered with reason 4 and the single version
//! 5.0, as [`HostConnection`](crate::host::HostConnection) does.
//!
//! ## Request, response and fault
//!
//! ### Request body
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 16 | 4 | `alloc_hint` | the stub length |
//! | 20 | 2 | `p_cont_id` | the presentation context, and so the NDR flavour of the stub |
//! | 22 | 2 | `opnum` | 0 |
//! | 24 | 16 | object UUID | only when the header has the object-UUID flag (0x80); KMS clients never set it |
//! | 24 | … | stub | the [input stub](#input-stub) |
//!
//! ### Response body
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 16 | 4 | `alloc_hint` | the stub length |
//! | 20 | 2 | `p_cont_id` | the request's |
//! | 22 | 1 | `cancel_count` | 0 |
//! | 23 | 1 | reserved | 0 |
//! | 24 | … | stub | the [output stub](#output-stub-on-success) |
//!
//! ### Fault body
//!
//! A fault is 32 bytes long, with flags 0x23 and the call id of the request
//! it answers:
//!
//! | offset | size | field | notes |
//! |---|---|---|---|
//! | 16 | 4 | `alloc_hint` | vlmcsd writes 32 |
//! | 20 | 2 | `p_cont_id` | 0 |
//! | 22 | 1 | `cancel_count` | 0 |
//! | 23 | 1 | reserved | 0 |
//! | 24 | 4 | status | an `nca_s_*` code |
//! | 28 | 4 | reserved | 0 |
//!
//! Status codes: `NCA_S_UNK_IF` (0x1C010003) for a request on a context id
//! that was never negotiated, or before any bind; `NCA_S_PROTO_ERROR`
//! (0x1C01000B) for a violation of the RPC protocol; `NCA_S_OP_RNG_ERROR`
//! (0x1C010002) for an opnum other than 0 (recommended; vlmcsd does not check
//! the opnum). This crate also uses `NCA_S_FAULT_NDR` for a stub that does
//! not decode (`Error::fault_status`). Faults only ever report such
//! RPC-level problems: a refused activation is an HRESULT in a normal
//! response.
//!
//! ## Call and context ids
//!
//! * Every reply carries the `call_id` of the PDU it answers: `bind_ack` that
//!   of the bind, `alter_context_resp` that of the `alter_context`, response
//!   or fault that of the request.
//! * The numbering is the client's business, and a host must not assume
//!   any. vlmcs keeps one counter for its whole process, starting at 2: a
//!   bind or `alter_context` uses the current value, a request uses it and
//!   then increments it. A connection thus shows bind 2, `alter_context` 2,
//!   requests 2, 3, …, and the bind of the next connection takes the value
//!   the counter has reached. Windows clients are reported to start at 2 as
//!   well.
//! * A request names an accepted context in `p_cont_id`; the response
//!   repeats it.
//!
//! ## Fragments
//!
//! DCE/RPC may split a PDU into fragments, flagged first and last. KMS never
//! has to: DCE guarantees peers accept fragments of at least 1432 bytes,
//! clients advertise 5840 (`DEFAULT_MAX_FRAG_LEN`), and the largest KMS PDU
//! is 312 bytes. So every KMS PDU is sent whole, with both the first- and
//! last-fragment flags (`PfcFlags::SINGLE`), and hosts simply echo the
//! fragment sizes the bind proposed (the host of this crate caps them at
//! [`HostLimits::max_frag_len`](crate::host::HostLimits::max_frag_len)). vlmcs refuses a reply that lacks either
//! flag; vlmcsd drops a connection whose PDU body exceeds 284 bytes (the body
//! of an NDR64 V6 request).
//!
//! A lenient host may still accept a fragmented request, joining the
//! fragments of one `call_id` until the last-fragment flag arrives:
//! `Reassembler` does that under a cap on the total stub size
//! (`MAX_STUB_LEN` by default). Splitting the TCP stream into PDUs in the
//! first place is the job of `frame_len` and `FrameSplitter`.
//!
//! ## PDU sizes
//!
//! The `frag_length` of each PDU of a KMS session, for n presentation
//! contexts and a secondary address of L bytes (NUL included):
//!
//! | PDU | bytes |
//! |---|---|
//! | bind, `alter_context` | 28 + 44·n: 72, 116, 160 for 1, 2, 3 contexts |
//! | `bind_ack` | 26 + L + pad + 4 + 24·n; 36 + 24·n (60, 84, 108) with L = 5 or 6 |
//! | `alter_context_resp` | 32 + 24·n: 56 for one context |
//! | request, V4 message | 284 in NDR32, 292 in NDR64 |
//! | request, V5 or V6 message | 292 in NDR32, 300 in NDR64 |
//! | response, V4 message with a 48-character ePID | 200 in NDR32 |
//! | response, V5 message with a 48-character ePID | 252 in NDR32 |
//! | response, V6 message of 260 bytes | 300 in NDR32, 312 in NDR64 |
//! | response carrying an HRESULT refusal | 36 in NDR32, 44 in NDR64 |
//! | fault | 32 |
//!
//! In general a request PDU is 24 + 8 + N (NDR32) or 24 + 16 + N (NDR64)
//! bytes for an N-byte KMS request, and a response PDU 24 + 12 + M + pad + 4
//! (NDR32) or 24 + 24 + M + pad + 4 (NDR64) for an M-byte KMS response, the
//! pad aligning the HRESULT to 4 bytes. KMS message sizes are listed in
//! [`crate::message`](crate::message#message-sizes).
//!
//! ## NDR stubs of RequestActivation
//!
//! The stub starts at PDU offset 24, right after the request or response
//! body fields; offsets in this section count from the start of the stub.
//! NDR32 ([`Ndr::Ndr32`]) uses 4-byte array conformances and pointers; NDR64
//! ([`Ndr::Ndr64`]) uses 8-byte ones, aligned to 8. An `int` is 4 bytes in
//! both.
//!
//! ### Input stub
//!
//! | NDR32 offset | NDR64 offset | size | field |
//! |---|---|---|---|
//! | 0 | 0 | 4 | `requestSize` = N |
//! | — | 4 | 4 | zero bytes, aligning the next field to 8 |
//! | 4 | 8 | 4 (NDR32), 8 (NDR64) | array conformance (maximum count), equal to N |
//! | 8 | 16 | N | the KMS request |
//!
//! A KMS request has 252 bytes (V4) or 260 (V5, V6), a multiple of 4, so no
//! padding follows the array. As a top-level reference pointer, `request`
//! itself takes no bytes. (In NDR64, vlmcsd emits `requestSize` and the
//! four alignment bytes together as one 8-byte integer; the bytes are the
//! same.)
//!
//! ### Output stub on success
//!
//! | NDR32 offset | NDR64 offset | size | field |
//! |---|---|---|---|
//! | 0 | 0 | 4 | `responseSize` = M |
//! | — | 4 | 4 | zero bytes, aligning the next field to 8 |
//! | 4 | 8 | 4 (NDR32), 8 (NDR64) | referent id of the response array: non-zero, `0x00020000` |
//! | 8 | 16 | 4 (NDR32), 8 (NDR64) | array conformance, equal to M |
//! | 12 | 24 | M | the KMS response |
//! | 12 + M | 24 + M | 0–3 | zero bytes up to a multiple of 4 (counted from the stub start) |
//! | then | then | 4 | return value: HRESULT 0 |
//!
//! `response` is a `byte **`. Of its two levels, only the inner pointer is
//! marshalled: it is a unique pointer, which NDR represents by a referent id,
//! while the outer, top-level one is a reference pointer and invisible. Example: an NDR32 stub with a 158-byte V4 response has
//! the data end at offset 170, two pad bytes, and the HRESULT at 172, for a
//! 176-byte stub. (vlmcsd writes the HRESULT directly after the data and the
//! pad after it; for a successful call all those bytes are zero either way.
//! The encoders here follow the table.)
//!
//! ### Output stub on error
//!
//! A refusal carries no response array: size 0, a NULL pointer, and the
//! HRESULT (`StubReply::Error`).
//!
//! | NDR32 offset | NDR64 offset | size | field |
//! |---|---|---|---|
//! | 0 | 0 | 4 | `responseSize` = 0 |
//! | — | 4 | 4 | zero bytes |
//! | 4 | 8 | 4 (NDR32), 8 (NDR64) | referent id 0: NULL |
//! | 8 | 16 | 4 | the HRESULT, e.g. `0d 00 07 80` for 0x8007000D |
//!
//! The stub is 12 bytes in NDR32 and 20 in NDR64. A client recognises a
//! refusal by the NULL pointer and then reads the HRESULT. It should also
//! take a non-zero HRESULT as the outcome of the call when response data are
//! present; `decode_response_stub` does both.
pub use crate::rpc::{Error, Ndr, PduType};
