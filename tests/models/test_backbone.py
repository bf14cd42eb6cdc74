import torch
import torch.nn.functional as F

from ntdmbench.models.backbone import StemMaxPool


def test_stem_max_pool_without_autograd_equals_max_pool2d():
    """The strided-slice pool gives max_pool2d's values exactly, on odd and even sizes and negative inputs."""
    gen = torch.Generator().manual_seed(0)
    pool = StemMaxPool()
    for shape in [(2, 3, 17, 24), (1, 4, 16, 33), (1, 1, 1, 2)]:
        x = torch.randn(shape, generator=gen) - 1
        with torch.no_grad():
            assert torch.equal(pool(x), F.max_pool2d(x, 3, 2, 1))
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)  # all ties: max_pool2d sends each window's gradient to one input
    pool(x).sum().backward()
    want = torch.zeros(1, 1, 4, 4, requires_grad=True)
    F.max_pool2d(want, 3, 2, 1).sum().backward()
    assert torch.equal(x.grad, want.grad)
