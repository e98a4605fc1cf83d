"""The built-in data has real sequential structure: SASRec beats most-popular by a clear margin."""

import torch
from torch import nn

from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import eval_set, training_samples
from seqcl.data.loading import load_data
from seqcl.evaluation import evaluate
from seqcl.interfaces import Encoder
from seqcl.plugins import load_plugins
from seqcl.training import train


class MostPopular(Encoder):
    """Scores every item by its training-part frequency (h = [1], item table = counts)."""

    def __init__(self, counts: torch.Tensor):
        super().__init__()
        self.hidden_size = 1
        self.table = nn.Parameter(counts.float().unsqueeze(1), requires_grad=False)

    def embed(self, items):
        return torch.ones(*items.shape, 1)

    def contextualize(self, h_in, items):
        return h_in

    def item_table(self):
        return self.table


def test_sasrec_beats_most_popular_on_builtin(tmp_path):
    plugins = load_plugins()
    r = resolve(plugins.registry, overrides=[parse_assignment(a) for a in (
        "dataset=builtin", "train.epochs=3", "sasrec.hidden_size=32", "sasrec.inner_size=64",
        "data.max_len=20", f"run.dir={tmp_path}")])
    result = train(r, plugins, log=lambda m: None)

    data, _ = load_data("builtin", r.data)
    samples = training_samples(data)
    counts = torch.bincount(samples.targets, minlength=data.num_items + 1)
    pop = evaluate(MostPopular(counts), eval_set(data, "test"), data.num_items, r.data.max_len).metrics
    assert result.test["hr@10"] > 2.5 * pop["hr@10"], (result.test, pop)
    assert result.test["ndcg@10"] > 2.5 * pop["ndcg@10"]
