//! The proxy: global IPv6 addresses for Instances and Assets, and TCP/UDP/HTTP
//! forwarding between hosts over QUIC, including hosts behind NAT.
//!
//! Empty until its issue lands.
