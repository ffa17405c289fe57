"""Named constants of TCVADS and of the formats we read. Each says where it comes from."""

SNIPPET_FRAMES = 16  # frames per snippet: the field's convention (C3D/I3D features, UCF-Crime, XD-Violence)
# CLIP image-tower frames per snippet: snippet-level feature lists (the format `train --list` reads) hold one
# feature per 16-frame snippet, and 16 ViT-B/16 passes per snippet would be 562 GFLOPs (Jetson budget: 100)
CLIP_FRAMES_PER_SNIPPET = 1
CLIP_CONTEXT_LENGTH = 77  # maximum token length of CLIP's text encoder (paper, Sec. IV-B)
PROMPT_CONTEXT_TOKENS = 40  # learnable context length l (paper, Sec. V-B, "context length l is 40")
CLIP_TAU = 0.07  # temperature tau of Exp. (16) (paper, Sec. V-B)
ALIGN_WEIGHT_ALPHA = 1.2  # alpha of Exp. (19) (paper, Sec. V-B)
CONTRAST_WEIGHT_BETA = 0.8  # beta of Exp. (19) (paper, Sec. V-B)
CONTRAST_MARGIN_DELTA = 0.5  # delta of Exp. (18) (paper, Sec. V-B)
ALIGN_L2_LAMBDA1 = 5e-4  # lambda_1 of Exp. (17), XD-Violence value (paper, Sec. V-B)
CONTRAST_L2_LAMBDA2 = 6e-4  # lambda_2 of Exp. (18), XD-Violence value (paper, Sec. V-B)
KD_TEMPERATURE_RANGE = (0.5, 5.0)  # search range of the distillation temperature T (issue 3)
KD_TEMPERATURE_PAPER = 2.5  # T the paper's Bayesian optimisation found (Fig. 5)
MIL_TOPK_DIVISOR = 16  # MIL top-k: k = max(1, T // 16) snippets per bag, as RTFM / VadCLIP do
RWKV_BLOCKS = 2  # enhanced RWKV = two TimeMix blocks, no ChannelMix (paper, Sec. IV-A)
FINE_HIDDEN_DIM = 512  # d of the fine stage's video branch: CLIP ViT-B/16's embedding width (our choice, not the paper's)
CLIP_EMBED_DIM = 512  # CLIP ViT-B/16 joint image-text embedding width (open_clip's ViT-B-16 config)
FIG4_LENGTHS = (250, 500, 750, 1000, 1250, 1500, 1750)  # sequence lengths N of the paper's Fig. 4 (RWKV vs Transformer)
QACM_LAYERS = 3  # QACM = three causal temporal conv layers (paper, Sec. IV-A)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm ImageNet statistics, RGB order
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_MEAN = (0.498, 0.498, 0.498)  # EfficientNet-Lite: (x - 127) / 128 on 0..255 pixels
LITE0_STD = (0.502, 0.502, 0.502)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_SIZE = 224  # backbone input side (EfficientNet-Lite0, MobileNetV3, CLIP ViT-B/16)

XD_VIOLENCE_CLASSES = ("normal", "fighting", "shooting", "riot", "abuse", "car accident", "explosion")
XD_VIOLENCE_CODES = {"A": "normal", "B1": "fighting", "B2": "shooting", "B4": "riot", "B5": "abuse",
                     "B6": "car accident", "G": "explosion"}

JETSON_NANO_MAX_PARAMS = 100e6  # Jetson Nano budget used in the paper (Sec. V, Table X)
JETSON_NANO_MAX_FLOPS = 100e9  # per forward pass
CORAL_MAX_MODEL_BYTES = 32 * 1024 * 1024  # Coral Edge TPU model size budget (paper, Table X)
# The default whole-frame resize (edge_vad.resize): integer-factor INTER_AREA, then INTER_LINEAR_EXACT; the same
# pixels on x86 and arm64, where plain INTER_AREA rounds differently (DESIGN.md, "Board facts")
EXACT_AREA = "exact-area"
