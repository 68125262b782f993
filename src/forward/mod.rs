//! What each LVS forwarding method does to a frame.
