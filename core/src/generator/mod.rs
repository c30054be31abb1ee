//! The generator, one room per concern: the user [`context`] it reads (with the [`trend`] of
//! the moment it is asked at), the [`model`] (a causal
//! MoE stack over the user's stream with an ID head and an item expert; the design and why is in
//! its doc), next-token
//! [`train`]ing, [`recommend`]ation through the one beam search in [`crate::decode`], its
//! [`evaluate`]ion (ranking, legality, P-score), and the
//! [`snapshot`] a trained generator is saved as. The mechanics it shares with the reward model
//! and alignment (weights ↔ bytes, AdamW, the schedule, resuming) are in [`crate::training`].

pub mod catalogue;
pub mod context;
pub mod evaluate;
pub mod model;
pub mod recommend;
pub mod snapshot;
pub mod train;
pub mod trend;
