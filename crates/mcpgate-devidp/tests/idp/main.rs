//! The development IdP over real HTTPS on loopback: every grant, the
//! pages, the negative cases, and the Entra behaviours it reproduces.

mod certificates;
mod conditional_access;
mod device;
mod fidelity;
mod flows;
mod hardening;
mod negative;
mod pages;
mod restart;
mod support;
