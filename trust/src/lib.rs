//! Node identity (FALCON-1024), the cluster CA and certificates, ML-KEM sealing of
//! secrets, and the four consensus proofs (stake, time, space, work).
//!
//! Empty until the agent registers assets (issue 5).
