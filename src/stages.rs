//! The stateful stages a worker runs between ingress and routing, registered here and
//! nowhere else. The pipeline knows them only through `pipeline::Stages`; dispatch is an
//! enum match (no virtual call per packet). A packet is offered to the stages in order and
//! the first that claims it (any verdict but `Pass`) decides. The load balancer goes first:
//! its targets' replies may come from a NAT gateway's inside prefix, and must be
//! translated back to the VIP rather than source-NATed.

use crate::lb::stage::LbStage;
use crate::nat::stage::NatStage;
use crate::packet::PacketBuf;
use crate::pipeline::{StageVerdict, Stages};

/// One registered stage.
pub enum Stage {
    Lb(LbStage),
    Nat(NatStage),
}

impl Stage {
    #[inline]
    fn process<B: PacketBuf>(&mut self, pkt: &mut B, now: u64) -> StageVerdict {
        match self {
            Stage::Lb(s) => s.process(pkt, now),
            Stage::Nat(s) => Stages::<B>::process(s, pkt, now),
        }
    }
    fn poll<B: PacketBuf>(&mut self, now: u64) {
        match self {
            Stage::Lb(s) => s.poll(now),
            Stage::Nat(s) => Stages::<B>::poll(s, now),
        }
    }
    fn publish<B: PacketBuf>(&mut self) {
        match self {
            Stage::Lb(s) => s.publish(),
            Stage::Nat(s) => Stages::<B>::publish(s),
        }
    }
}

/// The chain a worker runs (LB, then NAT), in claim order.
#[derive(Default)]
pub struct StageChain {
    stages: Vec<Stage>,
}

impl StageChain {
    /// `None` when no stage is configured (the pipeline then skips the chain entirely).
    pub fn build(lb: Option<LbStage>, nat: Option<NatStage>) -> Option<StageChain> {
        let mut stages = Vec::new();
        stages.extend(lb.map(Stage::Lb));
        stages.extend(nat.map(Stage::Nat));
        (!stages.is_empty()).then_some(StageChain { stages })
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }
}

impl<B: PacketBuf> Stages<B> for StageChain {
    #[inline]
    fn process(&mut self, pkt: &mut B, now: u64) -> StageVerdict {
        for s in self.stages.iter_mut() {
            match s.process(pkt, now) {
                StageVerdict::Pass => continue,
                v => return v,
            }
        }
        StageVerdict::Pass
    }
    fn poll(&mut self, now: u64) {
        for s in self.stages.iter_mut() {
            s.poll::<B>(now);
        }
    }
    fn publish(&mut self) {
        for s in self.stages.iter_mut() {
            s.publish::<B>();
        }
    }
}
