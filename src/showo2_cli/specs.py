"""The `ModelSpec` registry: every size and default of a Show-o2 variant in one dataclass.

A spec fully determines the network's shapes (so a random model can be built from it) and the
defaults the pipelines use (resolution, sequence budget, which tasks the weights can do). The
official checkpoints do not record all of this (the flow head's size is hard-coded in the
official code), so `loading.py` fills a spec from ``config.json`` plus the weights' shapes, and
falls back to the registry only for values that no shape reveals (head counts, RoPE bases).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from dataclasses import dataclass, field

from .errors import UsageError, did_you_mean, given, short
from .options import MAX_SIDE, STEPS_RANGE, is_finite_number

# Tasks a checkpoint was trained for. The released checkpoints cannot generate video (spec §0).
IMAGE_UND = "image-understanding"
VIDEO_UND = "video-understanding"
T2I = "t2i"
T2V = "t2v"
I2V = "i2v"
ALL_TASKS = (IMAGE_UND, VIDEO_UND, T2I, T2V, I2V)
VELOCITY_LAYOUTS = ("raster", "patch")  # ModelSpec.velocity_layout (spec §6.4; "raster" is official)


#: the longest sequence budget a spec may declare (the real models use 1024 to about 7000)
MAX_SEQ_LEN_LIMIT = 1_048_576

@dataclass
class ModelSpec:
    """Every architectural size and inference default of one Show-o2 variant."""

    name: str
    description: str = ""
    repo_id: str | None = None  # Hugging Face repo of the Show-o2 weights
    llm_repo_id: str | None = None  # where the official tokenizer (and LLM config) lives
    # --- LLM backbone (Qwen2.5) ---
    hidden_size: int = 1536  # H
    num_layers: int = 28
    num_heads: int = 12
    num_kv_heads: int = 2
    head_dim: int = 128
    intermediate_size: int = 8960
    vocab_size: int = 151669  # rows of embed_tokens / lm_head after the official resize
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"  # the MLP activation (the Qwen2 config's hidden_act)
    rope_scaling: dict | None = None  # the Qwen2 config's rope_scaling (linear, yarn, ...; dynamic is refused); None: plain RoPE
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 32768
    # --- semantic layers (SigLIP-so400m minus its last layer) ---
    clip_latent_dim: int = 1152  # D_s
    semantic_layers: int = 26
    semantic_heads: int = 16
    semantic_intermediate: int = 4304
    semantic_eps: float = 1e-6
    semantic_act: str = "gelu_pytorch_tanh"  # the MLP activation (the SigLIP vision config's hidden_act)
    position_embedding_rows: int = 729  # learned 27x27 table
    # --- flow head (fixed 2048-wide in the official code, independent of the LLM) ---
    head_hidden: int = 2048  # D_f
    head_layers: int = 10
    head_heads: int = 32
    head_kv_heads: int = 8
    head_dim_flow: int = 64
    head_intermediate: int = 8192
    head_rope_theta: float = 500_000.0
    head_rope_scaling: dict = field(
        default_factory=lambda: {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    )
    head_norm_eps: float = 1e-5
    # --- latent space ---
    latent_channels: int = 16  # C (Wan2.1 VAE)
    patch_size: int = 2  # p
    vae_spatial: int = 8
    vae_temporal: int = 4
    image_latent_grid: int = 27  # config.json image_latent_height (tokens per side)
    # config.json image_latent_width where it differs from the height (a non-square grid); None: square.
    # The official code reads the configured grid's token count (not the input's) to choose between
    # the position table as it is and an interpolated one (``ModelSpec.position_rows``).
    image_latent_grid_width: int | None = None
    # --- inference defaults ---
    resolution: int = 432  # pixels per side for t2i and understanding
    resolutions: tuple[int, ...] = (432,)  # sizes the weights were trained for
    max_seq_len: int = 1024  # t2i sequence budget (cond and uncond padded to this)
    video_frames: int = 17  # t2v default, 1+4k
    video_resolution: int = 432
    und_video_frames: int = 32  # frames sampled for video understanding
    und_video_pool: int = 14  # per-frame token grid after pooling (14x14)
    und_mask_mode: str = "official"  # understanding omni-mask block the checkpoint expects (official|training)
    und_template: str = "official"  # understanding prompt layout it expects (official|training)
    # A temporal cue for models trained from scratch (0 = off, as in every official checkpoint): a
    # learned per-frame embedding (this many rows, width H) added to the fused tokens of frame k of
    # every video input (generation latent frames and understanding frames alike), so frame order is
    # visible to the network beyond the LLM's 1-D positions. Frames past the last row use the last row.
    frame_embeddings: int = 0
    # How the flow head's per-position outputs map back onto the latent (spec §6.4): "raster" (the
    # official raster-chunk rows: row r holds raster positions p*p*r .. p*p*r+p*p-1 of the full grid,
    # not the patch that position reads) or "patch" (row r holds the p x p patch at the grid position
    # the same token embeds), an option for models trained from scratch; every official checkpoint
    # is "raster".
    velocity_layout: str = "raster"
    guidance: float = 5.0
    steps: int = 50
    shift: float = 3.0
    tasks: tuple[str, ...] = (IMAGE_UND, T2I)

    def __post_init__(self) -> None:
        # a whole number where a float is declared (JSON's `"rms_norm_eps": 1`, TOML's `rope_theta =
        # 10000`) is that float: transformers' configs refuse an int eps, torch overflows on a huge int
        # theta. One too large for a float stays as given, for validate() to refuse.
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and is_finite_number(value):
                setattr(self, name, float(value))

    # ---- derived helpers ----
    @property
    def config_grid(self) -> tuple[int, int]:
        """The configured token grid (config.json image_latent_height, image_latent_width)."""
        return self.image_latent_grid, self.image_latent_grid_width or self.image_latent_grid

    @property
    def config_tokens(self) -> int:
        """Tokens of one configured frame (the official ``image_position_ids``' length)."""
        h, w = self.config_grid
        return h * w

    @property
    def latent_multiple(self) -> int:
        """Pixel sides must be a multiple of this (VAE factor x patch size = 16)."""
        return self.vae_spatial * self.patch_size

    def default_size(self, video: bool = False) -> tuple[int, int]:
        """(height, width) in pixels a generation gets when none is asked for: the resolution's
        square, or the configured non-square grid's shape (the official demos' latent_height x
        latent_width) when the resolution is the one that grid's height gives."""
        side = self.video_resolution if video else self.resolution
        h, w = self.config_grid
        if w != h and side == h * self.latent_multiple:
            return side, w * self.latent_multiple
        return side, side

    @property
    def text_budget(self) -> int:
        """Prompt tokens a generation row holds (the official ``max_text_len``): ``max_seq_len`` less
        the default size's visual positions (the time slot too) and the 4 frame tokens; at least 16."""
        return max(self.max_seq_len - (self.tokens_per_frame(*self.default_size()) + 1) - 4, 16)

    # frame counts: the VAE's temporal compression (``vae_temporal``, 4 for Wan2.1) is written here only

    def is_valid_frames(self, n: int) -> bool:
        """True if the VAE takes ``n`` pixel frames: ``1 + vae_temporal * k`` with ``k >= 0`` (1, 5, 9, ...)."""
        return (not isinstance(n, bool) and isinstance(n, numbers.Integral) and n >= 1
                and (n - 1) % self.vae_temporal == 0)

    def round_frames(self, n: int, mode: str = "up") -> int:
        """The nearest valid frame count at or above (``"up"``) or below (``"down"``) ``n``: 16 -> 17
        (up) or 13 (down); 17 -> 17. Counts below 1 (0) give 1 in both modes; a negative count is a
        :class:`UsageError`."""
        n = whole_count(n, "the number of frames")
        if mode not in ("up", "down"):
            raise UsageError(f"round mode must be 'up' or 'down', got {mode!r}")
        if n < 0:
            raise UsageError(f"the number of frames cannot be negative, got {n}")
        if n <= 1:
            return 1
        k, step = n - 1, self.vae_temporal
        return 1 + step * (k // step if mode == "down" else -(-k // step))

    def latent_frames(self, n: int) -> int:
        """Latent frames of ``n`` pixel frames: ``1 + (n - 1) // vae_temporal`` (17 -> 5)."""
        n = whole_count(n, "the number of frames")
        if n < 1:
            raise UsageError(f"the number of frames must be at least 1, got {n}")
        return 1 + (n - 1) // self.vae_temporal

    def pixel_frames(self, t_latent: int) -> int:
        """Pixel frames decoded from ``t_latent`` latent frames: ``1 + vae_temporal * (t_latent - 1)`` (5 -> 17)."""
        t_latent = whole_count(t_latent, "the number of latent frames")
        if t_latent < 1:
            raise UsageError(f"the number of latent frames must be at least 1, got {t_latent}")
        return 1 + self.vae_temporal * (t_latent - 1)

    def vae_mismatch(self, vae) -> str | None:
        """Which of this spec's VAE factors (``vae_spatial``, ``vae_temporal``) the VAE's own
        (``spatial_factor``, ``temporal_factor``, read from its config) contradicts, or None: the
        latents generated are the spec's shape, and the VAE decodes them by its own."""
        wrong = [f"{key} {mine} but the VAE's is {theirs}" for key, mine, theirs in (
            ("vae_spatial", self.vae_spatial, vae.spatial_factor), ("vae_temporal", self.vae_temporal, vae.temporal_factor))
            if mine != theirs]
        return "; ".join(wrong) or None

    def tokens_per_frame(self, height: int, width: int) -> int:
        m = self.latent_multiple
        return (height // m) * (width // m)

    def supports(self, task: str) -> bool:
        return task in self.tasks

    def parameter_estimate(self) -> int:
        """About how many parameters the network of this spec has (LLM, semantic layers, flow
        head; norms and small projections left out): to refuse a size before allocating it."""
        h, hd, fh, fd = self.hidden_size, self.head_dim, self.head_hidden, self.head_dim_flow
        llm = self.num_layers * (2 * h * self.num_heads * hd + 2 * h * self.num_kv_heads * hd
                                 + 3 * h * self.intermediate_size)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        semantic = self.semantic_layers * (4 * self.clip_latent_dim ** 2 + 2 * self.clip_latent_dim
                                           * self.semantic_intermediate)
        head = self.head_layers * (2 * fh * self.head_heads * fd + 2 * fh * self.head_kv_heads * fd
                                   + 3 * fh * self.head_intermediate)
        return llm + embed + semantic + head

    def replace(self, **changes) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["resolutions"] = list(self.resolutions)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown model spec field(s): {', '.join(unknown)}")
        d = dict(d)
        for key in ("resolutions", "tasks"):
            if key in d:
                d[key] = tuple(d[key])
        spec = cls(**d)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check the sizes are positive and mutually consistent; raise UsageError naming the first problem."""
        positive = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                    "vocab_size", "max_position_embeddings", "clip_latent_dim", "semantic_heads",
                    "semantic_intermediate", "position_embedding_rows", "head_hidden", "head_heads",
                    "head_kv_heads", "head_dim_flow", "head_intermediate", "latent_channels", "patch_size",
                    "vae_spatial", "vae_temporal", "image_latent_grid", "resolution", "video_resolution",
                    "max_seq_len", "video_frames", "und_video_frames", "und_video_pool", "steps")
        for key in positive:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"invalid model spec '{self.name}': {key} must be a positive integer, "
                                 f"got {str(value)[:20]}")
        for key in ("rope_theta", "head_rope_theta"):
            value = getattr(self, key)
            if not is_finite_number(value) or not 0 < value:
                raise UsageError(f"invalid model spec '{self.name}': {key} must be a positive number, "
                                 f"got {str(value)[:20]}")
        for key in ("rms_norm_eps", "semantic_eps", "head_norm_eps"):  # 0 runs in the official code too
            value = getattr(self, key)
            if not is_finite_number(value) or not 0 <= value:
                raise UsageError(f"invalid model spec '{self.name}': {key} must be a number from 0, "
                                 f"got {str(value)[:20]}")
        for key in ("semantic_layers", "head_layers"):  # none is an official depth (SigLIP depth 1, no flow block)
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"invalid model spec '{self.name}': {key} must be a whole number from 0, "
                                 f"got {str(value)[:20]}")
        self._validate_rope_scaling()
        self._validate_llm_config()
        side = max([self.resolution, self.video_resolution, *self.resolutions])
        if side > MAX_SIDE:
            raise UsageError(f"invalid model spec '{self.name}': a resolution of {side} pixels is over "
                             f"{MAX_SIDE}")
        checks = [
            (self.hidden_size == self.num_heads * self.head_dim, "hidden_size must equal num_heads*head_dim"),
            (self.num_heads % self.num_kv_heads == 0, "num_heads must be a multiple of num_kv_heads"),
            (self.head_heads % self.head_kv_heads == 0, "head_heads must be a multiple of head_kv_heads"),
            (self.head_hidden == self.head_heads * self.head_dim_flow, "head_hidden must equal head_heads*head_dim_flow"),
            (self.clip_latent_dim % self.semantic_heads == 0, "clip_latent_dim must be a multiple of semantic_heads"),
            (int(round(self.position_embedding_rows**0.5)) ** 2 == self.position_embedding_rows, "position_embedding_rows must be a square"),
            (self.image_latent_grid_width is None or (not isinstance(self.image_latent_grid_width, bool)
                                                      and isinstance(self.image_latent_grid_width, int)
                                                      and self.image_latent_grid_width >= 1),
             "image_latent_grid_width must be a positive integer or null"),
            (all(t in ALL_TASKS for t in self.tasks), f"tasks must be among {ALL_TASKS}"),
            (0 <= self.frame_embeddings <= 4096, "frame_embeddings must be between 0 and 4096"),
            (self.velocity_layout in VELOCITY_LAYOUTS, f"velocity_layout must be one of {VELOCITY_LAYOUTS}"),
            # the defaults it gives the commands: within what their options accept (else a command
            # blamed an option the user never gave)
            (self.und_mask_mode in ("official", "training"), "und_mask_mode must be 'official' or 'training'"),
            (self.und_template in ("official", "training"), "und_template must be 'official' or 'training'"),
            (STEPS_RANGE[0] <= self.steps <= STEPS_RANGE[1], "steps must be between {} and {}".format(*STEPS_RANGE)),
            (self.max_seq_len <= MAX_SEQ_LEN_LIMIT, f"max_seq_len must be at most {MAX_SEQ_LEN_LIMIT}"),
            (_number(self.guidance) and 0 <= self.guidance <= 100, "guidance must be a number from 0 to 100"),
            (_number(self.shift) and 0 < self.shift <= 1e6, "shift must be a number above 0"),
            (self.vae_spatial <= 64 and self.vae_temporal <= 64 and self.patch_size <= 64,
             "vae_spatial, vae_temporal and patch_size must be at most 64"),
        ]
        for ok, what in checks:
            if not ok:
                raise UsageError(f"invalid model spec '{self.name}': {what}")
        made = max(*self.default_size(), *self.default_size(video=True))  # a wide grid's (3 x 1000: 48x16000)
        if made > MAX_SIDE:  # (t2i with no --size said '--size must be ... up to 4096, got 16000x48')
            raise UsageError(f"invalid model spec '{self.name}': its configured token grid {self.config_grid[0]}x"
                             f"{self.config_grid[1]} makes images {made} pixels a side, over {MAX_SIDE}")

    def _validate_llm_config(self) -> None:
        """The activations and the LLM's RoPE scaling: ones the installed transformers builds (the
        official code hands its Qwen2 and SigLIP configs to transformers as they are)."""
        if (self.hidden_act, self.semantic_act, self.rope_scaling) == ("silu", "gelu_pytorch_tanh", None):
            return  # the released models' (no transformers import on the way to a fast usage error)
        from .runtime import quiet_imports

        with quiet_imports():
            from transformers import Qwen2Config
            from transformers.activations import ACT2CLS
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        for key in ("hidden_act", "semantic_act"):
            value = getattr(self, key)
            if not isinstance(value, str) or value not in ACT2CLS:
                raise UsageError(f"invalid model spec '{self.name}': {key} must be one of {', '.join(sorted(ACT2CLS))}, "
                                 f"got {str(value)[:40]}")
        scaling = self.rope_scaling
        if scaling is None:
            return
        kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
        if not isinstance(kind, str) or (kind != "default" and kind not in ROPE_INIT_FUNCTIONS):  # (["yarn"])
            offered = sorted(set(ROPE_INIT_FUNCTIONS) - {"dynamic"})  # refused below: not offered
            raise UsageError(f"invalid model spec '{self.name}': rope_scaling must be an object with a rope_type "
                             f"among default, {', '.join(offered)}, got {str(scaling)[:60]}")
        if kind == "dynamic":
            raise UsageError(f"invalid model spec '{self.name}': rope_scaling 'dynamic' (NTK) is not supported: the "
                             "official code recomputes every position's frequencies from the whole sequence's length "
                             "(the longest it has seen) at each step, which a key/value cache cannot reproduce past "
                             "max_position_embeddings; use 'linear' or 'yarn', or no rope_scaling")
        for key, value in scaling.items():
            if key in ("rope_type", "type") or value is None or (key == "truncate" and isinstance(value, bool)):
                continue
            # NaN passes every "< 1" test; 10**30 overflowed torch building the RoPE, 10**400 (a JSON
            # integer) a float, and a text ("beta_fast": "32") failed deep inside transformers (a
            # TypeError of its dataclass validation)
            if not all(_rope_number(x) for x in (value if isinstance(value, list) else [value])):
                raise UsageError(f"invalid model spec '{self.name}': rope_scaling {str(scaling)[:60]}: its numbers "
                                 f"must be finite numbers ({key} is {short(repr(value), 24)}; a whole number below 2**63)")
        # transformers' own check of the type's numbers (factor, ...); since transformers 5 it logs what
        # it refuses ("factor field must be a float or int >= 1, got 0.0") and builds the RoPE anyway:
        # a linear factor of 0 made every position's rotation NaN, every answer garbage (exit 0)
        refused: list[str] = []
        catch = logging.Handler(logging.WARNING)
        catch.emit = lambda record: refused.extend(  # its refusals, not its advice  # type: ignore[method-assign]
            [m] if "field must" in (m := record.getMessage()) or m.startswith("Missing") else [])
        rope_log = logging.getLogger("transformers.modeling_rope_utils")
        level, propagate = rope_log.level, rope_log.propagate
        rope_log.addHandler(catch)
        rope_log.setLevel(logging.WARNING)
        rope_log.propagate = False
        try:
            Qwen2Config(hidden_size=self.hidden_size, num_attention_heads=self.num_heads, head_dim=self.head_dim,
                        num_key_value_heads=self.num_kv_heads, rope_theta=self.rope_theta,
                        max_position_embeddings=self.max_position_embeddings, rope_scaling=dict(scaling))
        except (KeyError, ValueError, TypeError) as e:
            refused.insert(0, str(e))
        finally:
            rope_log.removeHandler(catch)
            rope_log.setLevel(level)
            rope_log.propagate = propagate
        if refused:
            raise UsageError(f"invalid model spec '{self.name}': rope_scaling {str(scaling)[:60]}: "
                             f"{refused[0].replace('`', '').strip(chr(34))[:160]}")

    def _validate_rope_scaling(self) -> None:
        """The flow head's RoPE scaling: none, ``default``, or ``llama3`` with its four numbers."""
        scaling = self.head_rope_scaling
        if scaling is None:
            return
        kind = scaling.get("rope_type", "default") if isinstance(scaling, dict) else None
        if kind not in ("default", "llama3"):
            raise UsageError(f"invalid model spec '{self.name}': head_rope_scaling must be an object with "
                             f"rope_type 'default' or 'llama3', got {str(scaling)[:60]}")
        if kind == "llama3":
            for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                value = scaling.get(key)
                if not _rope_number(value) or not 0 < value:  # (10**30: it overflowed building the RoPE)
                    raise UsageError(f"invalid model spec '{self.name}': head_rope_scaling.{key} must be a "
                                     f"positive number (a whole number below 2**63), got {str(value)[:20]}")
            if scaling["low_freq_factor"] == scaling["high_freq_factor"]:
                raise UsageError(f"invalid model spec '{self.name}': head_rope_scaling's low_freq_factor and "
                                 "high_freq_factor must differ")


#: the fields declared float (a whole number given for one is taken as that float: ModelSpec.__post_init__)
FLOAT_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec) if str(f.type) == "float")


def whole_count(n, what: str) -> int:
    """``n`` as an int (numpy integers too); a :class:`UsageError` naming ``what`` for anything else."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise UsageError(f"{what} must be a whole number, got {n!r}")
    return int(n)


def size_hw(size) -> tuple[int, int]:
    """A resize target as ``(height, width)``: a whole number (a square) or a pair of them (numpy's
    too), each 1 to :data:`MAX_SIDE` pixels; anything else is a UsageError before any pixel is made
    (``(10**9, 10**9)`` was a MemoryError inside Pillow, ``10**30`` an OverflowError)."""
    def whole(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if whole(size):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        if not all(whole(v) for v in size):
            raise UsageError(f"size must be whole numbers, got {short(size)}")
        h, w = (int(v) for v in size)
    else:
        raise UsageError(f"size must be an integer or (height, width), got {given(size)}")  # ('64': "got 64")
    if h < 1 or w < 1:
        raise UsageError(f"size must be positive, got {h}x{w} (height x width)")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise UsageError(f"size must be at most {MAX_SIDE} pixels a side, got {short(h)}x{short(w)} (height x width)")
    return h, w


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == value


def _rope_number(value) -> bool:
    """A finite number that torch takes in a RoPE's computation: a whole number beyond int64's range
    (``"factor": 10**30`` in a config.json) overflowed it ("int too big to convert", exit 1)."""
    return is_finite_number(value) and (not isinstance(value, int) or abs(value) < 2**63)


#: the formulas (frame counts, sizes) of the default Wan2.1 VAE geometry, for when no model is at hand
WAN21 = ModelSpec(name="wan2.1", description="the Wan2.1 VAE's geometry (8x spatial, 4x temporal)")

_QWEN_1_5B = dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                  intermediate_size=8960, tie_word_embeddings=True, llm_repo_id="Qwen/Qwen2.5-1.5B-Instruct")
_QWEN_7B = dict(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                intermediate_size=18944, tie_word_embeddings=False, llm_repo_id="Qwen/Qwen2.5-7B-Instruct")

REGISTRY: dict[str, ModelSpec] = {
    "1.5B": ModelSpec(name="1.5B", repo_id="showlab/show-o2-1.5B",
                      description="Show-o2 1.5B: image understanding and 432px text-to-image", **_QWEN_1_5B),
    "1.5B-HQ": ModelSpec(name="1.5B-HQ", repo_id="showlab/show-o2-1.5B-HQ",
                         description="Show-o2 1.5B-HQ: 512/1024px text-to-image, better text rendering",
                         resolution=512, resolutions=(512, 1024), max_seq_len=1280, steps=50, **_QWEN_1_5B),
    "7B": ModelSpec(name="7B", repo_id="showlab/show-o2-7B",
                    description="Show-o2 7B: image understanding and 432px text-to-image", **_QWEN_7B),
    "1.5B-w-video-und": ModelSpec(name="1.5B-w-video-und", repo_id="showlab/show-o2-1.5B-w-video-und",
                                  description="Show-o2 1.5B with video understanding",
                                  tasks=(IMAGE_UND, VIDEO_UND, T2I), **_QWEN_1_5B),
    "7B-w-video-und": ModelSpec(name="7B-w-video-und", repo_id="showlab/show-o2-7B-w-video-und",
                                description="Show-o2 7B with video understanding",
                                tasks=(IMAGE_UND, VIDEO_UND, T2I), **_QWEN_7B),
    # A tiny spec that can do everything, for tests: every code path runs in milliseconds.
    "tiny": ModelSpec(
        name="tiny", description="tiny random model for tests (every task, meaningless outputs)",
        hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
        vocab_size=282, tie_word_embeddings=True, max_position_embeddings=8192,
        clip_latent_dim=32, semantic_layers=2, semantic_heads=2, semantic_intermediate=64,
        position_embedding_rows=16, head_hidden=48, head_layers=2, head_heads=4, head_kv_heads=2,
        head_dim_flow=12, head_intermediate=96, image_latent_grid=4,
        resolution=64, resolutions=(64,), max_seq_len=64, video_frames=5, video_resolution=64,
        und_video_frames=4, steps=4, tasks=ALL_TASKS,
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name` (case-insensitive), or a UsageError listing the known ones."""
    for key, spec in REGISTRY.items():
        if key.lower() == name.lower():
            return spec
    raise UsageError(f"unknown model spec '{short(name, 80)}'; known: {', '.join(REGISTRY)}{did_you_mean(name, REGISTRY)}")


def spec_for_hidden_size(hidden_size: int, resolution: int | None = None) -> ModelSpec | None:
    """The official spec whose LLM has this width (used to fill in sizes no shape reveals); of
    several, the first trained at ``resolution`` (a 512 or 1024 px config is the 1.5B-HQ's)."""
    found = [spec for spec in REGISTRY.values() if spec.hidden_size == hidden_size and spec.name != "tiny"]
    at = [spec for spec in found if resolution in spec.resolutions]
    return (at or found or [None])[0]
