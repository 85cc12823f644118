"""The DLRM (Naumov et al. 2019) over a :class:`~recs.features.spec.FeatureSpec`.

Bottom MLP over the standardised dense features, one embedding table per sparse feature
(sum/mean pooled bags, bucket 0 = null/padding embeds to zero and is left out of a mean),
the pairwise dot products of all embedding vectors and the bottom-MLP output (strictly
lower triangle) concatenated with the bottom-MLP output, a top MLP and a logit.

Design choices (what each saves is measured in ``docs/model-design.md``):

* All tables live in one fused ``[rows, dim]`` matrix with per-feature row offsets, so a
  batch is one ``index_select`` instead of one ``EmbeddingBag`` call per feature. The
  tables stay logically separate: each feature owns its own row range (:meth:`table`).
* The gather's backward emits an uncoalesced sparse COO gradient (rows touched by the
  batch only), which :class:`recs.train.optim.RowWiseAdagrad` applies without coalescing.
* The interaction has a hand-written backward: one ``bmm`` with the symmetric gradient
  matrix instead of autograd's two ``bmm`` plus an ``index_add``.
* MLP inputs are zero-padded to a multiple of 8 columns (13 -> 16 dense, 367 -> 368 for the
  top MLP), the widths BLAS GEMMs are fastest at. The padded columns are always zero, so
  their weights get zero gradients, stay zero and change nothing. Every other ``Linear``
  (hidden layers of any configured width, the heads, the linear term) pads its input the
  same way at call time (:class:`AlignedLinear`): at other widths a row's score would
  depend on its position in the batch.

Linear term: on by default. The logit also gets a linear function of the standardised dense
features (the "wide" half of Wide & Deep, Cheng et al. 2016). Before the first epoch it is
fitted as a logistic regression on the normaliser's sample (:meth:`DLRM.fit_linear`), so
training starts from what the dense counters alone predict and the deep part learns what they
leave. On a few days of a small shop's examples that regression already ranks a user's
candidates better than their sources' order, while the deep part alone overfits ids within an
epoch (``docs/model-design.md`` has the figures). Artefacts saved before the term existed load
without it (``arch()["linear"]`` false).

Ads head: on by default. Rows with ``is_ad`` take their logit from a second output layer
on the shared top MLP (one extra ``Linear(width, 1)``), so ads whose clicks follow other
rules than organic clicks (another base rate, another driver) get their own calibration.
Pass ``is_ad`` when scoring ads, or their pCTR comes from the organic head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recs.features.spec import FeatureSpec

PADDING_ROW = 0
ALIGN = 8  # MLP input widths are padded to a multiple of this


def aligned(width: int) -> int:
    return -(-width // ALIGN) * ALIGN


def bottom_widths(num_dense: int, hidden: Sequence[int], embedding_dim: int) -> list[int]:
    """Layer widths input..output; the last layer must emit ``embedding_dim`` to join the dot products."""
    widths = [num_dense, *(int(w) for w in hidden)]
    if widths[-1] != embedding_dim or len(widths) == 1:
        widths.append(embedding_dim)
    return widths


def top_widths(interaction_width: int, hidden: Sequence[int]) -> list[int]:
    """Hidden widths of the top MLP; a trailing 1 in the config means the logit layer, added separately."""
    hidden = [int(w) for w in hidden]
    if hidden and hidden[-1] == 1:
        hidden = hidden[:-1]
    return [interaction_width, *hidden]


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear+ReLU stack over an input padded to ``aligned(widths[0])`` zero-filled columns.

    Kaiming init keeps activations from shrinking through ReLUs; the weights of the padding
    columns start (and, with zero inputs, stay) at zero.
    """
    layers: list[nn.Module] = []
    fan_ins = [aligned(widths[0]), *widths[1:-1]]
    for k, (fan_in, fan_out) in enumerate(zip(fan_ins, widths[1:], strict=True)):
        linear = AlignedLinear(fan_in, fan_out)
        nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        if k == 0:
            with torch.no_grad():
                linear.weight[:, widths[0] :].zero_()
        layers += [linear, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _pad_columns(x: Tensor, width: int) -> Tensor:
    return F.pad(x, (0, width - x.shape[1])) if x.shape[1] != width else x


class AlignedLinear(nn.Linear):
    """``nn.Linear`` that multiplies over an input width padded with zeros to a multiple of ``ALIGN``.

    With an inner width that is not a multiple of 4, MKL's kernels for narrow outputs give a
    row a result that depends on its position in the batch (measured on CPU: ``Linear(26, 2)``
    changes the last bits of 1,718 of 4,096 rows when the batch is permuted; widths that are
    multiples of 4 or 8 change none). Spark hands a rerun its rows in another order, so
    without this it would write other scores. Zeros change no value, and the parameters keep
    their shapes, so artefacts load as before.
    """

    def forward(self, x: Tensor) -> Tensor:
        width = aligned(self.in_features)
        return F.linear(_pad_columns(x, width), _pad_columns(self.weight, width), self.bias)


class _GatherRows(torch.autograd.Function):
    """``weight[rows]`` whose gradient is a sparse COO tensor over the gathered rows only.

    Building the COO tensor without coalescing is free; the optimizer deduplicates rows
    itself. Rows equal to the padding row get a zero gradient so padding stays zero.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.weight_shape = weight.shape
        return weight.index_select(0, rows)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (rows,) = ctx.saved_tensors
        values = grad.reshape(rows.numel(), -1) * (rows != PADDING_ROW).unsqueeze(1).to(grad.dtype)
        sparse = torch.sparse_coo_tensor(
            rows.unsqueeze(0), values, ctx.weight_shape, is_coalesced=False, check_invariants=False
        )
        return sparse, None


class FusedEmbeddingBags(nn.Module):
    """One embedding table per sparse feature, stored as row ranges of one matrix.

    Row 0 is a shared all-zero padding row; feature ``f``'s bucket ``b >= 1`` lives at row
    ``start_f + b - 1``. Multi-valued features are pooled (sum or mean over non-padding
    slots), exactly like ``F.embedding_bag(..., padding_idx=0)`` on a per-feature table.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.names = [f.name for f in spec.sparse]
        self.buckets = [f.buckets for f in spec.sparse]
        self.pooling = spec.pooling
        self.dim = spec.embedding_dim
        starts = np.cumsum([1] + [b - 1 for b in self.buckets])
        self.table_starts = [int(s) for s in starts[:-1]]
        self.num_rows = int(starts[-1])
        self.weight = nn.Parameter(torch.empty(self.num_rows, self.dim))
        shift, limit = [], []
        for f, start in zip(spec.sparse, self.table_starts, strict=True):
            shift += [start - 1] * f.max_len
            limit += [f.buckets] * f.max_len
        self.register_buffer("row_shift", torch.tensor(shift, dtype=torch.int64), persistent=False)
        self.register_buffer("bucket_limit", torch.tensor(limit, dtype=torch.int64), persistent=False)
        self.segments = self._segments(spec)
        self.reset_parameters()

    @staticmethod
    def _segments(spec: FeatureSpec) -> list[tuple[bool, int, int]]:
        """(multi, start, stop) slot ranges: runs of single-valued features are sliced as one piece."""
        out: list[tuple[bool, int, int]] = []
        for f, (start, stop) in zip(spec.sparse, spec.sparse_slices(), strict=True):
            if not f.multi and out and not out[-1][0] and out[-1][2] == start:
                out[-1] = (False, out[-1][1], stop)
            else:
                out.append((f.multi, start, stop))
        return out

    def reset_parameters(self) -> None:
        """Small init: buckets never seen in training stay close to the (zero) padding row."""
        with torch.no_grad():
            self.weight.normal_(0.0, 0.01)
            self.weight[PADDING_ROW].zero_()

    def rows(self, sparse: Tensor) -> Tensor:
        """Bucket indices ``[B, W]`` -> fused-table rows; refuses a bucket outside its feature's table."""
        if sparse.dim() != 2 or sparse.shape[1] != self.row_shift.numel():
            raise ValueError(f"sparse must be [batch, {self.row_shift.numel()}], got {list(sparse.shape)}")
        sparse = sparse.long()
        outside = (sparse < 0) | (sparse >= self.bucket_limit)
        if sparse.is_cuda:  # no host sync per batch on the GPU
            torch._assert_async(~outside.any(), "sparse bucket outside its feature's table")
        elif bool(outside.any()):
            bad = int(outside.any(0).nonzero()[0])
            raise ValueError(f"sparse slot {bad} has a bucket outside [0, {int(self.bucket_limit[bad])})")
        return torch.where(sparse > 0, sparse + self.row_shift, PADDING_ROW)

    def forward(self, sparse: Tensor) -> Tensor:
        """``[B, W]`` bucket indices -> pooled embeddings ``[B, num_features, dim]``."""
        rows = self.rows(sparse)
        slots = _GatherRows.apply(self.weight, rows.reshape(-1)).view(rows.shape[0], rows.shape[1], self.dim)
        if len(self.segments) == 1 and not self.segments[0][0]:
            return slots
        pieces = []
        for multi, start, stop in self.segments:
            piece = slots[:, start:stop]
            if multi:
                piece = piece.sum(1, keepdim=True)
                if self.pooling == "mean":
                    count = (rows[:, start:stop] != PADDING_ROW).sum(1, keepdim=True).clamp_min(1)
                    piece = piece / count.unsqueeze(-1).to(piece.dtype)
            pieces.append(piece)
        return torch.cat(pieces, dim=1)

    def table(self, name: str) -> Tensor:
        """Feature ``name``'s own ``[buckets, dim]`` table (a copy; row 0 is the zero padding row)."""
        i = self.names.index(name)
        start = self.table_starts[i]
        body = self.weight.detach()[start : start + self.buckets[i] - 1]
        return torch.cat([self.weight.detach()[PADDING_ROW : PADDING_ROW + 1], body])


def lower_triangle(n: int) -> tuple[Tensor, Tensor]:
    """Pairs (i, j) with i > j, row-major: the order of the interaction features."""
    return tuple(torch.tril_indices(n, n, offset=-1))  # type: ignore[return-value]


class _PairwiseDots(torch.autograd.Function):
    """All pairwise dot products of ``t [B, n, d]``, strictly lower triangle -> ``[B, n(n-1)/2]``."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, flat_pairs: Tensor, symmetric_map: Tensor) -> Tensor:
        ctx.save_for_backward(t, symmetric_map)
        z = torch.bmm(t, t.transpose(1, 2)).flatten(1)
        return torch.gather(z, 1, flat_pairs.expand(z.shape[0], -1))  # faster than index_select on dim 1

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        t, symmetric_map = ctx.saved_tensors
        b, n, _ = t.shape
        # d<t_i,t_j>/dt_i = t_j: one bmm with the symmetric matrix of pair gradients (zero diagonal).
        padded = torch.cat([grad, grad.new_zeros(b, 1)], dim=1)
        sym = torch.gather(padded, 1, symmetric_map.expand(b, -1)).view(b, n, n)
        return torch.bmm(sym.to(t.dtype), t), None, None


class PairwiseInteraction(nn.Module):
    """DLRM "dot" interaction: ``[x, <v_i, v_j> for i > j]`` over ``v = [x, e_1..e_F]``.

    With ``pad_to`` the output gets trailing zero columns up to that width (see module doc).
    """

    def __init__(self, num_vectors: int, pad_to: int | None = None) -> None:
        super().__init__()
        self.pad_to = pad_to
        n = num_vectors
        li, lj = lower_triangle(n)
        pairs = li.numel()
        symmetric = torch.full((n * n,), pairs, dtype=torch.int64)  # `pairs` indexes a zero column
        symmetric[li * n + lj] = torch.arange(pairs)
        symmetric[lj * n + li] = torch.arange(pairs)
        self.register_buffer("flat_pairs", li * n + lj, persistent=False)
        self.register_buffer("symmetric_map", symmetric, persistent=False)
        self.num_pairs = pairs

    def forward(self, x: Tensor, embeddings: Tensor) -> Tensor:
        t = torch.cat([x.unsqueeze(1), embeddings.to(x.dtype)], dim=1)
        dots = _PairwiseDots.apply(t, self.flat_pairs, self.symmetric_map).to(x.dtype)
        width = x.shape[1] + self.num_pairs
        if self.pad_to is None or self.pad_to == width:
            return torch.cat([x, dots], dim=1)
        return torch.cat([x, dots, x.new_zeros(x.shape[0], self.pad_to - width)], dim=1)


class DLRM(nn.Module):
    """DLRM from a feature spec plus MLP widths.

    ``bottom_mlp`` are the hidden widths after the dense input; a last layer of width
    ``spec.embedding_dim`` is appended unless already there. ``top_mlp`` are hidden widths
    after the interaction; the logit layer (width 1) is always added.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        bottom_mlp: Sequence[int],
        top_mlp: Sequence[int],
        *,
        ads_head: bool = True,
        linear: bool = True,
    ) -> None:
        super().__init__()
        if not spec.sparse:
            raise ValueError("DLRM needs at least one sparse feature")
        self.spec = spec
        dim = spec.embedding_dim
        self.bottom_widths = bottom_widths(spec.num_dense, bottom_mlp, dim)
        self.register_buffer("dense_mean", torch.zeros(spec.num_dense))
        self.register_buffer("dense_std", torch.ones(spec.num_dense))
        self.register_buffer("normalizer_rows", torch.zeros((), dtype=torch.int64))
        self.bottom = _mlp(self.bottom_widths)
        self.embedding = FusedEmbeddingBags(spec)
        n = len(spec.sparse) + 1
        self.interaction = PairwiseInteraction(n, pad_to=aligned(dim + n * (n - 1) // 2))
        self.top_widths = top_widths(dim + self.interaction.num_pairs, top_mlp)
        self.top = _mlp(self.top_widths)
        self.head = AlignedLinear(self.top_widths[-1], 2 if ads_head else 1)  # column 1: the ads logit
        self.linear: AlignedLinear | None = None
        if linear:
            self.linear = AlignedLinear(spec.num_dense, self.head.out_features, bias=False)
            nn.init.zeros_(self.linear.weight)

    def arch(self) -> dict[str, Any]:
        """Constructor arguments (what ``config.json`` stores to rebuild the module)."""
        return {
            "bottom_mlp": self.bottom_widths[1:],
            "top_mlp": self.top_widths[1:],
            "ads_head": self.has_ads_head,
            "linear": self.linear is not None,
        }

    @property
    def has_ads_head(self) -> bool:
        return self.head.out_features == 2

    @property
    def normalizer_fitted(self) -> bool:
        return int(self.normalizer_rows) > 0

    @torch.no_grad()
    def fit_normalizer(self, dense: Tensor) -> None:
        """Standardise with the training window's statistics, stored with the weights.

        Constant features get std 1 so they become 0 rather than inf/nan.
        """
        dense = dense.detach().to(device=self.dense_mean.device, dtype=torch.float64)
        if dense.dim() != 2 or dense.shape[1] != self.spec.num_dense or dense.shape[0] == 0:
            raise ValueError(f"fit_normalizer needs a non-empty [rows, {self.spec.num_dense}] sample")
        mean = dense.mean(0)
        std = dense.std(0, unbiased=False)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.dense_mean.copy_(mean.float())
        self.dense_std.copy_(std.float())
        self.normalizer_rows.fill_(dense.shape[0])

    @torch.no_grad()
    def fit_linear(
        self, dense: Tensor, label: Tensor, weight: Tensor, is_ad: Tensor, l2: float = 3e-3
    ) -> None:
        """Start the linear term and each head's bias from a weighted, ridge-penalised logistic
        regression on standardised ``dense``: organic rows for the organic head, ad rows for the
        ads head. Needs the normaliser fitted; a head whose rows hold one label is left as is.

        The start slows the deep part's first steps (its residual is smaller), which is what
        keeps it from overfitting ids on small data; ``l2`` shrinks the start so that a deep
        part with real interactions to learn still escapes its first plateau within an epoch
        or two (``docs/model-design.md``: 1e-4 stalled one of six planted-interaction runs).
        """
        if self.linear is None:
            return
        x = self.standardised(dense.to(self.dense_mean.device)).double().cpu()
        ads, label, weight = is_ad.bool().cpu(), label.cpu().double(), weight.cpu().double()
        for col in range(self.head.out_features):
            rows = ads if col == 1 else ~ads
            y, w = label[rows], weight[rows]
            if len(y) == 0 or bool((y == y[0]).all()):
                continue
            coef, intercept = _logistic_regression(x[rows], y, w, l2)
            self.linear.weight[col] = coef.to(self.linear.weight)
            self.head.bias[col] = self.head.bias[col] + float(intercept)

    def standardised(self, dense: Tensor) -> Tensor:
        return (dense.float() - self.dense_mean) / self.dense_std

    def bottom_output(self, dense: Tensor) -> Tensor:
        """Standardised, zero-padded dense features through the bottom MLP -> ``[B, dim]``."""
        return self._bottom(self.standardised(dense))

    def _bottom(self, standardised: Tensor) -> Tensor:
        return self.bottom(_pad_columns(standardised, aligned(self.spec.num_dense)))

    def forward(self, dense: Tensor, sparse: Tensor, is_ad: Tensor | None = None) -> Tensor:
        """``dense [B, num_dense]`` float, ``sparse [B, sparse_width]`` int -> logits ``[B]``.

        With the ads head, rows where ``is_ad`` is true take their logit from it.
        """
        if dense.dim() != 2 or dense.shape[1] != self.spec.num_dense:
            raise ValueError(f"dense must be [batch, {self.spec.num_dense}], got {list(dense.shape)}")
        x = self.standardised(dense)
        out = self.head(self.top(self.interaction(self._bottom(x), self.embedding(sparse))))
        if self.linear is not None:
            out = out + self.linear(x)
        if self.has_ads_head and is_ad is not None:
            return torch.where(is_ad.bool(), out[:, 1], out[:, 0])
        return out[:, 0]

    @torch.inference_mode()
    def predict(self, dense: Tensor, sparse: Tensor, is_ad: Tensor | None = None) -> Tensor:
        """Click probabilities ``[B]`` (fp32), no autograd bookkeeping."""
        return torch.sigmoid(self.forward(dense, sparse, is_ad).float())

    def predict_numpy(
        self,
        dense: np.ndarray,
        sparse: np.ndarray,
        is_ad: np.ndarray | None = None,
        batch_size: int = 65536,
    ) -> np.ndarray:
        """Probabilities for numpy inputs (e.g. an Arrow batch inside a Spark UDF), in chunks.

        Every chunk holds exactly ``batch_size`` rows (the last is padded): BLAS picks its
        kernels, and so its rounding, by the number of rows, so without padding a row's score
        would depend on how many rows it arrived with, and a rerun of the same date that
        batches rows differently would write scores a bit apart.
        """
        device = self.dense_mean.device
        rows = len(dense)
        out = np.empty(rows, dtype=np.float32)
        for start in range(0, rows, batch_size):
            stop = min(start + batch_size, rows)
            pad = batch_size - (stop - start)
            d = torch.as_tensor(dense[start:stop], dtype=torch.float32, device=device)
            s = torch.as_tensor(sparse[start:stop], dtype=torch.int64, device=device)
            flag = None if is_ad is None else torch.as_tensor(is_ad[start:stop], device=device)
            if pad:
                # Zeros are valid inputs (sparse 0 is the padding row); their scores are dropped.
                d = F.pad(d, (0, 0, 0, pad))
                s = F.pad(s, (0, 0, 0, pad))
                flag = None if flag is None else F.pad(flag, (0, pad))
            out[start:stop] = self.predict(d, s, flag)[: stop - start].cpu().numpy()
        return out

    def table(self, name: str) -> Tensor:
        """The embedding table of sparse feature ``name`` (``[buckets, dim]``, row 0 = padding)."""
        return self.embedding.table(name)


def _logistic_regression(x: Tensor, y: Tensor, w: Tensor, l2: float) -> tuple[Tensor, Tensor]:
    """(coefficients, intercept) minimising weighted mean log-loss + ``l2`` * |coef|^2 (L-BFGS)."""
    coef = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    intercept = torch.zeros((), dtype=x.dtype, requires_grad=True)
    w = w / w.sum()
    opt = torch.optim.LBFGS(
        [coef, intercept], max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def loss() -> Tensor:
        opt.zero_grad()
        logits = x @ coef + intercept
        value = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum()
        value = value + l2 * coef.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    return coef.detach(), intercept.detach()


def build_model(
    spec: FeatureSpec,
    bottom_mlp: Sequence[int],
    top_mlp: Sequence[int],
    *,
    ads_head: bool = True,
    linear: bool = True,
    seed: int = 0,
) -> DLRM:
    """A freshly initialised DLRM; the same seed gives the same weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DLRM(spec, bottom_mlp, top_mlp, ads_head=ads_head, linear=linear)


def embedding_parameters(model: DLRM) -> list[nn.Parameter]:
    """Parameters with sparse gradients (for the sparse optimizer)."""
    return [model.embedding.weight]


def dense_parameters(model: DLRM) -> list[nn.Parameter]:
    """Everything else (MLPs, heads) for the dense optimizer."""
    sparse_ids = {id(p) for p in embedding_parameters(model)}
    return [p for p in model.parameters() if id(p) not in sparse_ids]


__all__ = [
    "DLRM",
    "FusedEmbeddingBags",
    "PairwiseInteraction",
    "build_model",
    "bottom_widths",
    "dense_parameters",
    "embedding_parameters",
    "lower_triangle",
    "top_widths",
]
