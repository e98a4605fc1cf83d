"""Diagnose a NaN on CUDA: anomaly mode + optimizer hooks that name non-finite grads/params."""
import sys, torch
import torch.optim.optimizer as _opt
torch.autograd.set_detect_anomaly(True, check_nan=True)
steps = {"n": 0}
def pre(opt, args, kwargs):
    steps["n"] += 1
    for g in opt.param_groups:
        for p in g["params"]:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                print(f"step {steps['n']}: NONFINITE GRAD {tuple(p.shape)}", flush=True)
def post(opt, args, kwargs):
    bad = [tuple(p.shape) for g in opt.param_groups for p in g["params"] if not torch.isfinite(p).all()]
    if bad:
        print(f"step {steps['n']}: NONFINITE PARAMS after step {bad[:5]}", flush=True)
    if steps["n"] <= 3:
        st = [v for s in opt.state.values() for k, v in s.items() if k == "step"][:1]
        print(f"step {steps['n']}: ok; optimizer {type(opt).__name__} fused={opt.defaults.get('fused')} step-state {st}", flush=True)
_opt.register_optimizer_step_pre_hook(pre)
_opt.register_optimizer_step_post_hook(post)
from seqcl.cli import main
sys.exit(main(sys.argv[1:]))
