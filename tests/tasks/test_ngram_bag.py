"""The hashed n-gram bag: which n-grams it averages; padding and order matter as they should."""

import pytest
import torch

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.tasks.ngram_bag import NgramBag


def _bag(orders: tuple[int, ...], buckets: int = 1 << 20, scale: float = 1.0) -> NgramBag:
    bag = NgramBag(orders, buckets=buckets, dim=1, dropout=0.0, scale=scale)
    with torch.no_grad():  # row r holds r: the bag's output is the mean bucket id
        bag.embed.weight.copy_(torch.arange(buckets, dtype=torch.float).unsqueeze(1))
    return bag


def test_averages_every_ngram_of_the_real_tokens_and_none_with_padding():
    bag = _bag((1, 2))
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    pad = torch.tensor([[False, False, False, True, True]])
    buckets, valid = bag.bucket_ids(ids, pad)
    # unigrams 5, 6, 7 and bigrams (5, 6), (6, 7): five n-grams out of 5 + 4 positions
    assert valid.sum().item() == 5
    expected = buckets[valid].double().mean()
    assert bag(ids, pad).item() == pytest.approx(expected.item(), rel=1e-6)
    # the same text without its padding gives the same bag
    assert bag(ids[:, :3]).item() == pytest.approx(expected.item(), rel=1e-6)


def test_scale_multiplies_the_mean():
    ids = torch.tensor([[5, 6, 7]])
    assert _bag((1, 2), scale=20.0)(ids).item() == pytest.approx(20 * _bag((1, 2))(ids).item())


def test_a_classifier_reads_the_bag_beside_the_pooled_states(compose):
    cfg = compose("model=cnn", "task=classify", "task.ngram_bag={orders:[1,2],buckets:64,dim:4}")
    tokenizer = CharTokenizer().fit(["abcdefgh"])
    module = build_module(cfg, tokenizer, ["x", "y"]).eval()
    assert module.head.in_features == module.backbone.d_model + 4
    ids = torch.tensor([tokenizer.encode("abcab")])
    with torch.no_grad():
        before = module(ids)
        module.ngram_bag.embed.weight.add_(1.0)  # only the bag changes
        assert not torch.allclose(before, module(ids))


def test_order_within_an_ngram_matters_and_orders_do_not_collide():
    bag = _bag((1, 2, 3))
    ab, _ = bag.bucket_ids(torch.tensor([[3, 4]]), None)
    ba, _ = bag.bucket_ids(torch.tensor([[4, 3]]), None)
    assert ab[0, 2] != ba[0, 2]  # bigram (3, 4) vs (4, 3)
    uni, _ = bag.bucket_ids(torch.tensor([[3]]), None)
    tri, _ = bag.bucket_ids(torch.tensor([[3, 3, 3]]), None)
    # 3 vs (3, 3) vs (3, 3, 3)
    assert len({uni[0, 0].item(), tri[0, 3].item(), tri[0, -1].item()}) == 3


def test_bucket_ids_stay_in_range_for_large_ids():
    bag = _bag((1, 2, 3), buckets=97)
    ids = torch.randint(0, 2**31, (4, 50))
    buckets, _ = bag.bucket_ids(ids, None)
    assert buckets.min() >= 0 and buckets.max() < 97


def test_a_text_shorter_than_an_order_uses_the_orders_that_fit():
    bag = _bag((1, 3))
    buckets, valid = bag.bucket_ids(torch.tensor([[9, 8]]), None)
    assert buckets.shape == (1, 2) and valid.all()


@pytest.mark.parametrize("orders", [(), (0, 1), (6,)])
def test_bad_orders_fail_with_the_key(orders):
    with pytest.raises(ValueError, match="task.ngram_bag.orders"):
        NgramBag(orders, buckets=8, dim=2, dropout=0.0)
