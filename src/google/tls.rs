//! The process's TLS crypto provider for Google's clients.
//!
//! `google-cloud-auth` and `google-cloud-storage` are built without their
//! default provider (aws-lc-rs, a large C build); they then expect the
//! application to install one. We install rustls' ring provider, the one
//! reqwest already brings, once, before any client is built.

/// Installs ring as rustls' process-wide provider; later calls do nothing.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed: then that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
