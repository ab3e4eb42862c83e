//! How a client binds and calls.

/// What a client offers in its bind and how it numbers its calls.
///
/// The defaults reproduce the reference client `vlmcs` byte for byte:
/// NDR32, NDR64 and bind-time feature negotiation offered, call ids starting
/// at 2, and the first request sent over NDR32 (with an `alter_context` when
/// the host rejected NDR32 in favour of NDR64).
///
/// ```
/// use kms_activation::client::ClientConfig;
///
/// let mut config = ClientConfig::default();
/// config.set_ndr64(false).set_btfn(false);
/// assert!(!config.ndr64());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent on/off protocol options, each with its own setter"
)]
pub struct ClientConfig {
    ndr64: bool,
    btfn: bool,
    max_frag: u16,
    first_call_id: u32,
    multiplex: bool,
    first_call_ndr32: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            ndr64: true,
            btfn: true,
            max_frag: 5840,
            first_call_id: 2,
            multiplex: true,
            first_call_ndr32: true,
        }
    }
}

impl ClientConfig {
    /// Whether NDR64 is offered (default true).
    #[must_use]
    pub const fn ndr64(&self) -> bool {
        self.ndr64
    }

    /// Offer NDR64 in the bind.
    pub const fn set_ndr64(&mut self, on: bool) -> &mut Self {
        self.ndr64 = on;
        self
    }

    /// Whether bind-time feature negotiation is offered (default true).
    #[must_use]
    pub const fn btfn(&self) -> bool {
        self.btfn
    }

    /// Offer bind-time feature negotiation (mask 3) in the bind.
    pub const fn set_btfn(&mut self, on: bool) -> &mut Self {
        self.btfn = on;
        self
    }

    /// `max_xmit_frag` and `max_recv_frag` offered (default 5840).
    #[must_use]
    pub const fn max_frag(&self) -> u16 {
        self.max_frag
    }

    /// Sets `max_xmit_frag` / `max_recv_frag`.
    pub const fn set_max_frag(&mut self, max_frag: u16) -> &mut Self {
        self.max_frag = max_frag;
        self
    }

    /// Call id of the bind and first request (default 2, as Windows and vlmcs).
    #[must_use]
    pub const fn first_call_id(&self) -> u32 {
        self.first_call_id
    }

    /// Sets the first call id.
    pub const fn set_first_call_id(&mut self, id: u32) -> &mut Self {
        self.first_call_id = id;
        self
    }

    /// Whether the bind sets `PFC_CONC_MPX` (default true).
    #[must_use]
    pub const fn multiplex(&self) -> bool {
        self.multiplex
    }

    /// Set or clear `PFC_CONC_MPX` in the bind.
    pub const fn set_multiplex(&mut self, on: bool) -> &mut Self {
        self.multiplex = on;
        self
    }

    /// Whether the first request goes over NDR32 (default true, as vlmcs).
    #[must_use]
    pub const fn first_call_ndr32(&self) -> bool {
        self.first_call_ndr32
    }

    /// Send the first request over NDR32, negotiating it with an
    /// `alter_context` if the bind only accepted NDR64; later requests use
    /// NDR64 when accepted. With `false`, every request uses NDR64 when the
    /// host accepted it.
    pub const fn set_first_call_ndr32(&mut self, on: bool) -> &mut Self {
        self.first_call_ndr32 = on;
        self
    }
}
