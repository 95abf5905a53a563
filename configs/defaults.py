"""Every option of the toolkit, with its default and meaning.

Use `get_cfg()` for a fresh copy, merge a preset and `KEY VALUE` pairs, call
`assert_cfg()` (checks only), `infer_cfg()` (fills derived values, returns what it set),
then `cfg.freeze()`. Keys that say "-1 or empty: as VICTIM" follow the victim's recipe,
so by default each shadow is trained exactly like the victim (Shokri et al. 2017, Sec. IV).
"""

from yacs.config import CfgNode as CN

_C = CN()

# ------------------------------------------------------------------------------------ #
# DATASET: datasets/ (the data the victim and shadows are drawn from)
# ------------------------------------------------------------------------------------ #
_C.DATASET = CN()
# Dataset registry key (datasets/registry.py); allowed: cifar10, cifar100, mnist,
# fashionmnist (images), purchase100, texas100 (binary feature vectors), npz (your own).
_C.DATASET.NAME = "cifar10"
# Folder holding the data set's files as distributed: cifar-10-batches-py,
# cifar-100-python, MNIST/raw, FashionMNIST/raw (as torchvision stores them),
# dataset_purchase, dataset_texas/{feats,labels} (or their .tgz, extracted on first use).
_C.DATASET.ROOT = "./data"
# Download a missing data set into DATASET.ROOT (torchvision for the images; the authors'
# tarballs for purchase100 and texas100).
_C.DATASET.DOWNLOAD = True
# For DATASET.NAME npz: one .npz holding x_train, y_train, x_test, y_test (uint8 images
# (n, H, W), (n, H, W, C) or (n, C, H, W), or float features (n, d); labels 0 .. C-1).
_C.DATASET.PATH = ""
# Fraction of the records held out as the test split, for data sets without an official
# one (purchase100, texas100: seeded, class-stratified); -1: the data set's default (0.2).
_C.DATASET.TEST_FRACTION = -1.0
# Per-channel normalisation of pixels scaled to [0, 1] (per feature for feature vectors);
# []: the data set's (CIFAR-10: the original toolkit's values; binary features: none;
# npz images: the train split's own mean and std).
_C.DATASET.MEAN = []
_C.DATASET.STD = []
# Records of the train split given to the victim (class-balanced); the rest is the
# shadow pool, split into two equal halves (shadow "in" pool and shadow "out" pool).
_C.DATASET.VICTIM_POOL_SIZE = 15000

# ------------------------------------------------------------------------------------ #
# VICTIM: victims/ (the model under attack)
# ------------------------------------------------------------------------------------ #
_C.VICTIM = CN()
# Number of classes of the victim's task (= posterior width fed to the attack);
# -1: the data set's.
_C.VICTIM.NUM_CLASSES = -1
# Input channels of images (3 RGB, 1 greyscale) or inputs per feature vector (600 for
# purchase100); -1: the data set's.
_C.VICTIM.IN_FEATURES = -1
# A victim to load instead of training one: a file saved with torch.save holding this
# toolkit's checkpoint, a plain state_dict, or a dict holding one under 'state_dict' or
# 'model' (loaded with weights_only=True); empty: train the victim.
_C.VICTIM.CHECKPOINT = ""
# The train-split indices the victim was trained on: a .npy, an .npz (one array, or
# 'members') or a text file of one index per line. The evaluation's members are drawn from
# them, the shadow pools are the other train records, VICTIM.TRAIN.SET_SIZE and
# DATASET.VICTIM_POOL_SIZE become their count, and VICTIM.OPTIMIZER/TRAIN.* should say
# how the victim was trained (the shadows copy it). Empty: drawn from RNG_SEED.
_C.VICTIM.MEMBERS = ""
# What the victim releases per query, the only thing every attack sees (the attacker's
# shadows release the same): probs (softmax posteriors), topk (the OUTPUT_TOPK largest,
# the rest zeroed), rounded (to OUTPUT_DECIMALS decimals), label (the predicted class,
# one-hot; only correctness and label_only run on it).
_C.VICTIM.OUTPUT = "probs"
# Posteriors kept by VICTIM.OUTPUT topk (1 .. classes).
_C.VICTIM.OUTPUT_TOPK = 1
# Decimals kept by VICTIM.OUTPUT rounded (>= 0).
_C.VICTIM.OUTPUT_DECIMALS = 2
_C.VICTIM.MODEL = CN()
# Architecture registry key; allowed: simplecnn, pytorchcnn, resnet18, wrn, fastnet
# (images), simplemlp, mlp (any records, flattened), or package.module:Class, a user's
# nn.Module importable from the working folder or PYTHONPATH (built with those of
# num_classes, in_channels, image_size, in_features its constructor takes; it must return
# logits).
_C.VICTIM.MODEL.ARCH = "simplecnn"
# Hidden layer widths of simplemlp and mlp, stage widths of resnet18 (4) and fastnet (3);
# []: the architecture's own (simplemlp 128; mlp 1024-512-256-128, the usual
# Purchase-100/Texas-100 target; resnet18 64-128-256-512; fastnet 64-256-256, airbench94's).
_C.VICTIM.MODEL.LAYER_DIMS = []
# Depth and widening factor of wrn (WRN-DEPTH-WIDTH; DEPTH is 6n + 4); -1: the
# architecture's own (28 and 2: WRN-28-2, LiRA's CIFAR-10 model). Other architectures: -1.
_C.VICTIM.MODEL.DEPTH = -1
_C.VICTIM.MODEL.WIDTH = -1
# Initialisation; allowed: default (the architecture's own), airbench (fastnet only,
# airbench94's: dirac 3x3 convolutions, the stem whitening the 2x2 patches of the model's
# first 5000 training records, its weight frozen).
_C.VICTIM.MODEL.INIT = "default"
_C.VICTIM.OPTIMIZER = CN()
# Optimizer registry key; allowed: adam, adamw, sgd.
_C.VICTIM.OPTIMIZER.NAME = "adam"
# Learning rate. The paper used 0.001 for up to 100 epochs; 0.002 reaches the same
# overfitting (train accuracy 0.99, test 0.53 on 15000 records) in 20 epochs.
_C.VICTIM.OPTIMIZER.ALPHA = 2e-3
# Weight decay (L2); 0.0 lets the victim overfit like the paper's target.
_C.VICTIM.OPTIMIZER.GAMMA = 0.0
# Adam/AdamW betas; ignored by sgd.
_C.VICTIM.OPTIMIZER.BETAS = [0.9, 0.999]
# SGD momentum; ignored by adam and adamw.
_C.VICTIM.OPTIMIZER.MOMENTUM = 0.0
# SGD with Nesterov momentum (needs NAME sgd and MOMENTUM > 0).
_C.VICTIM.OPTIMIZER.NESTEROV = False
# Learning-rate schedule, stepped after every optimizer step (engine/recipe.py); allowed:
# none (constant), cosine (half a cosine down to 0 at the end), onecycle (linear down to
# ~0 at the end), multistep (x LR_DECAY at each of MILESTONES).
_C.VICTIM.OPTIMIZER.SCHEDULER = "none"
# Epochs (may be fractional) of linear warm-up from ~0 to ALPHA before the schedule
# (with any SCHEDULER, none included); 0.0: none.
_C.VICTIM.OPTIMIZER.WARMUP_EPOCHS = 0.0
# For multistep: the epochs after which the learning rate is multiplied by LR_DECAY.
_C.VICTIM.OPTIMIZER.MILESTONES = []
_C.VICTIM.OPTIMIZER.LR_DECAY = 0.1
# Batch-norm biases train at ALPHA x this, with weight decay GAMMA / this (the decay per
# SGD step unchanged); 1.0: as every other weight. airbench94: 64.
_C.VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE = 1.0
# Loss registry key; allowed: ce (cross-entropy on logits).
_C.VICTIM.CRITERION = "ce"
_C.VICTIM.TRAIN = CN()
# Training epochs, records per mini-batch.
_C.VICTIM.TRAIN.NUM_EPOCHS = 20
_C.VICTIM.TRAIN.BATCH_SIZE = 64
# Weight of the uniform distribution mixed into each one-hot target of the ce loss, in
# [0, 1); 0.0: none.
_C.VICTIM.TRAIN.LABEL_SMOOTHING = 0.0
# Data augmentation of each batch, on the device, each model drawing its own (also in a
# pack); allowed: none, flip (random horizontal flips), flip_crop (random 32x32 crop of the
# image padded by 4 reflected pixels, plus flip). Images only.
_C.VICTIM.TRAIN.AUGMENT = "none"
# MixUp (Zhang et al. 2018, a defense): each record trained on as lam * itself + (1 - lam)
# * a random partner of the same training set, lam ~ Beta(alpha, alpha) per record, the
# loss mixed alike; 0.0: none. Not with VICTIM.DP.
_C.VICTIM.TRAIN.MIXUP_ALPHA = 0.0
# Early stopping (a defense): after every epoch the model is scored on EARLY_STOP_RECORDS
# held-out records (the victim: from its pool, outside its training set; each shadow: from
# its "in" pool half, outside its own), and training ends once that loss has not improved
# for EARLY_STOP_PATIENCE epochs; the weights of the best epoch are kept. 0: off.
# Not with VICTIM.DP or SHADOW.SAMPLING random_half; no in-flight checkpoints while on.
_C.VICTIM.TRAIN.EARLY_STOP_PATIENCE = 0
_C.VICTIM.TRAIN.EARLY_STOP_RECORDS = 1000
# Records the victim trains on, drawn class-balanced from the victim pool
# (at most DATASET.VICTIM_POOL_SIZE); the paper's CIFAR-10 sizes: 2500 ... 15000.
_C.VICTIM.TRAIN.SET_SIZE = 15000
# Minutes between saves of the training in progress (weights, optimizer state, shuffle
# generators, epoch) at epoch ends, so that a killed run resumes from it with the same
# result; 0.0: no saves (a killed run trains the victim again).
_C.VICTIM.TRAIN.CHECKPOINT_MINUTES = 0.0
# DP-SGD through Opacus (engine/dp.py): per-record gradient clipping, Gaussian noise and
# Poisson-sampled batches; the shadows train the same way (one by one). The epsilon spent
# (RDP accountant, at DELTA) is metrics.json's victim.epsilon. In-flight checkpoints
# (CHECKPOINT_MINUTES) and MIXED_PRECISION are not available with it.
_C.VICTIM.DP = CN()
# Noise std over the clipping norm; 0.0 with TARGET_EPSILON 0.0: no DP-SGD.
_C.VICTIM.DP.NOISE_MULTIPLIER = 0.0
# Per-record gradient norm (L2) the gradients are clipped to.
_C.VICTIM.DP.MAX_GRAD_NORM = 1.0
# delta of the (epsilon, delta) guarantee; below 1 / training records.
_C.VICTIM.DP.DELTA = 1e-5
# > 0: Opacus picks the noise multiplier that spends this epsilon at DELTA over the
# training (NOISE_MULTIPLIER must then be 0.0).
_C.VICTIM.DP.TARGET_EPSILON = 0.0

# ------------------------------------------------------------------------------------ #
# SHADOW: shadow_models/ (models that imitate the victim on data of known membership)
# ------------------------------------------------------------------------------------ #
_C.SHADOW = CN()
# Number of shadow models (the paper's code default: 10; the paper used up to 100).
_C.SHADOW.NUM_MODELS = 10
_C.SHADOW.MODEL = CN()
# Architecture registry key (as VICTIM.MODEL.ARCH); empty: as VICTIM.
_C.SHADOW.MODEL.ARCH = ""
# Hidden layer widths (as VICTIM.MODEL.LAYER_DIMS); []: as VICTIM when the architecture
# is the victim's, else the architecture's own.
_C.SHADOW.MODEL.LAYER_DIMS = []
# wrn's depth and widening factor (as VICTIM.MODEL.DEPTH/WIDTH); -1: as VICTIM when the
# architecture is the victim's, else the architecture's own.
_C.SHADOW.MODEL.DEPTH = -1
_C.SHADOW.MODEL.WIDTH = -1
# Initialisation (as VICTIM.MODEL.INIT); empty: as VICTIM when the architecture is the
# victim's, else default.
_C.SHADOW.MODEL.INIT = ""
_C.SHADOW.OPTIMIZER = CN()
# Optimizer name, learning rate (ALPHA), weight decay (GAMMA), Adam betas, SGD
# momentum, each as VICTIM.OPTIMIZER.*; empty, -1 or []: as VICTIM.
_C.SHADOW.OPTIMIZER.NAME = ""
_C.SHADOW.OPTIMIZER.ALPHA = -1.0
_C.SHADOW.OPTIMIZER.GAMMA = -1.0
_C.SHADOW.OPTIMIZER.BETAS = []
_C.SHADOW.OPTIMIZER.MOMENTUM = -1.0
# Nesterov momentum, schedule, warm-up epochs, multistep milestones and decay, each as
# VICTIM.OPTIMIZER.*; empty, -1 or []: as VICTIM (NESTEROV also takes True or False).
_C.SHADOW.OPTIMIZER.NESTEROV = ""
_C.SHADOW.OPTIMIZER.SCHEDULER = ""
_C.SHADOW.OPTIMIZER.WARMUP_EPOCHS = -1.0
_C.SHADOW.OPTIMIZER.MILESTONES = []
_C.SHADOW.OPTIMIZER.LR_DECAY = -1.0
# Batch-norm bias learning-rate scale (as VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE); -1: as VICTIM.
_C.SHADOW.OPTIMIZER.NORM_BIAS_LR_SCALE = -1.0
# Loss registry key (as VICTIM.CRITERION); empty: as VICTIM.
_C.SHADOW.CRITERION = ""
_C.SHADOW.TRAIN = CN()
# True: train shadows; False: reuse the attack data already in the run folder.
_C.SHADOW.TRAIN.ENABLE = True
# Dataset the shadows are drawn from; empty or DATASET.NAME (the run has one data set).
_C.SHADOW.TRAIN.DATASET = ""
# A splits .npz (data_prep_examples/split_victim_shadow.py) holding victim_pool,
# shadow_in_pool and shadow_out_pool indices; empty: split in the run from RNG_SEED.
_C.SHADOW.TRAIN.DATA_PATH = ""
# Epochs, mini-batch size; -1: as VICTIM.TRAIN.
_C.SHADOW.TRAIN.NUM_EPOCHS = -1
_C.SHADOW.TRAIN.BATCH_SIZE = -1
# Label smoothing, augmentation, MixUp and early stopping (as VICTIM.TRAIN.*); -1 or
# empty: as VICTIM.
_C.SHADOW.TRAIN.LABEL_SMOOTHING = -1.0
_C.SHADOW.TRAIN.AUGMENT = ""
_C.SHADOW.TRAIN.MIXUP_ALPHA = -1.0
_C.SHADOW.TRAIN.EARLY_STOP_PATIENCE = -1
_C.SHADOW.TRAIN.EARLY_STOP_RECORDS = -1
# Folder for per-shadow metrics (and checkpoints); empty: OUTPUT_DIR/shadow_files.
_C.SHADOW.TRAIN.CHECKPOINT_DIR = ""
# Records each shadow draws from each pool half (train "in" and test "out");
# -1: as VICTIM.TRAIN.SET_SIZE. At most half the shadow pool.
_C.SHADOW.TRAIN.SET_SIZE = -1
# How shadows draw their records. disjoint (Shokri et al.): SET_SIZE "in" records from
# one pool half and as many "out" from the other. random_half (LiRA, RMIA): each shadow
# trains on a random half of a population made of the evaluated records (plus shadow-pool
# records up to 2 x SET_SIZE), so each evaluated record is "in" for about half the shadows.
_C.SHADOW.SAMPLING = "disjoint"
# Also save every shadow's weights (one .pth each) in CHECKPOINT_DIR.
_C.SHADOW.TRAIN.SAVE_CHECKPOINTS = False
# Shadows trained at once as one grouped model (engine/pack.py); results equal
# one-by-one training up to float rounding. 0: automatic (up to 64 on CUDA; on CPU up
# to 8, fewer when that leaves a NUM_WORKERS worker idle).
_C.SHADOW.TRAIN.MODELS_PER_PACK = 0
# Minutes between saves of each pack in training (stacked weights, optimizer state,
# shuffle generators, epoch) at epoch ends, so that a killed run resumes inside the pack
# with the same result; 0.0: only finished packs are kept. A save holds about 3x the
# pack's weights (Adam) and is removed once the pack is saved.
_C.SHADOW.TRAIN.CHECKPOINT_MINUTES = 0.0

# ------------------------------------------------------------------------------------ #
# ATTACKER: attack_models/ (one membership classifier per victim class)
# ------------------------------------------------------------------------------------ #
_C.ATTACKER = CN()
# Methods to run on the same victim and shadows, each a column of scores.csv and a row of
# report.md: shokri (per-class neural attack); loss, confidence, entropy,
# modified_entropy, correctness (per-class thresholds, Song & Mittal 2021); ml_leaks
# (top-3 posteriors, Salem et al. 2019); lira_online, lira_offline, lira_online_fixed,
# lira_offline_fixed (Carlini et al. 2022; "_fixed": one global variance); rmia (offline),
# rmia_online (Zarifzadeh et al. 2024); label_only (correctness on augmented queries,
# Choquette-Choo et al. 2021; image data). lira_* and rmia* need SHADOW.SAMPLING
# random_half. The first method fills metrics.json's overall/per_class and scores.csv's
# score column.
_C.ATTACKER.METHODS = ["shokri"]
# Views of each image the victim and every shadow are queried on (images only): 1 (the
# record), 2 (plus its mirror), 18 (both, each shifted by 0 or +-4 pixels in each
# direction, Carlini et al. 2022); LiRA fits Gaussians per view, RMIA votes over views,
# the threshold attacks average their signal over views (shokri, ml_leaks: the record).
_C.ATTACKER.QUERY_AUGMENTATIONS = 1
# Classes that get an attack model; records of other classes are left out; []: all.
_C.ATTACKER.VICTIM_CLASSES = []
_C.ATTACKER.MODEL = CN()
# Attack architecture registry key; allowed: fcnet.
_C.ATTACKER.MODEL.ARCH = "fcnet"
# Hidden layer widths of fcnet (Linear, BatchNorm1d, ReLU each), then Linear to 1
# (configs/original_attack.yaml restores the original's attack recipe: [64, 32, 16, 8]).
_C.ATTACKER.MODEL.LAYER_DIMS = [64, 64]
# Scaling of the posteriors before the first layer; allowed: none (as they are, the
# original's), log (log posteriors floored at 1e-30: tells 1 - 1e-3 from 1 - 1e-6), rank
# ([log-odds of the model's own class, posteriors], each through its empirical CDF over
# the model's training records, as a tree ensemble sees them).
_C.ATTACKER.MODEL.INPUT_SCALING = "rank"
# True: a BatchNorm1d after each hidden Linear of fcnet (the original's; without it the
# attack is as strong and twice as fast: docs/configuration.md).
_C.ATTACKER.MODEL.BATCH_NORM = False
# Networks per attack model, differently initialised and shuffled, each holding out other
# shadows (VAL_SHADOWS), trained as one pack; the model's logit is the mean of theirs
# (1: the original's single network).
_C.ATTACKER.MODEL.ENSEMBLE = 5
_C.ATTACKER.OPTIMIZER = CN()
# Optimizer name, learning rate, weight decay, Adam betas, SGD momentum (the original:
# lr 1e-4, weight decay 5e-4, which 5 epochs leave far from trained).
_C.ATTACKER.OPTIMIZER.NAME = "adam"
_C.ATTACKER.OPTIMIZER.ALPHA = 2e-3
_C.ATTACKER.OPTIMIZER.GAMMA = 0.0
_C.ATTACKER.OPTIMIZER.BETAS = [0.9, 0.999]
_C.ATTACKER.OPTIMIZER.MOMENTUM = 0.0
# Learning-rate schedule over each network's training, stepped after every optimizer
# step; allowed as VICTIM.OPTIMIZER.SCHEDULER (the original: none). WARMUP_EPOCHS,
# MILESTONES and LR_DECAY as there.
_C.ATTACKER.OPTIMIZER.SCHEDULER = "cosine"
_C.ATTACKER.OPTIMIZER.WARMUP_EPOCHS = 0.0
_C.ATTACKER.OPTIMIZER.MILESTONES = []
_C.ATTACKER.OPTIMIZER.LR_DECAY = 0.1
# Loss registry key; allowed: bce (binary cross-entropy on the attack's logit).
_C.ATTACKER.CRITERION = "bce"
# Membership score (sigmoid of the attack's logit, higher = member) at or above
# which a record is called a member; in [0, 1].
_C.ATTACKER.PRED_THRESHOLD = 0.5
_C.ATTACKER.TRAIN = CN()
# True: train attack models; False: load them from ATTACKER.TEST.CHECKPOINT_DIR.
_C.ATTACKER.TRAIN.ENABLE = True
# Dataset of the attack training records; empty or DATASET.NAME.
_C.ATTACKER.TRAIN.DATASET = ""
# Epochs (the most; VAL_SHADOWS picks the best) and mini-batch size of each attack model.
_C.ATTACKER.TRAIN.NUM_EPOCHS = 30
# Optimizer steps each network trains for: as many epochs as take NUM_STEPS steps, at most
# NUM_EPOCHS, so that a run with few shadow records trains its attack models as long as
# one with many does, and one with many no longer (0: NUM_EPOCHS epochs, the original).
_C.ATTACKER.TRAIN.NUM_STEPS = 1000
_C.ATTACKER.TRAIN.BATCH_SIZE = 256
# Shadows whose records each network holds out to pick, per class, the epoch with the
# lowest validation loss: network 0 of an ensemble the last VAL_SHADOWS shadows, network 1
# the ones before them, and so on round the fleet, so that the ensemble learns from every
# shadow; 0: train on every shadow, keep the last epoch (original); -1: 1 when there are
# at least 2 shadows, else 0.
_C.ATTACKER.TRAIN.VAL_SHADOWS = -1
# Folder for the attack data and attack models; empty: OUTPUT_DIR/attacker_files.
_C.ATTACKER.TRAIN.CHECKPOINT_DIR = ""
_C.ATTACKER.TEST = CN()
# True: evaluate the attack on the victim after training.
_C.ATTACKER.TEST.ENABLE = True
# Dataset of the evaluation records; empty or DATASET.NAME.
_C.ATTACKER.TEST.DATASET = ""
# An attack test set .npz (data_prep_examples/make_attack_test_set.py) holding
# eval_in (victim-train indices) and eval_out (test-split indices); empty: built in
# the run from the victim's train set and the test split.
_C.ATTACKER.TEST.DATA_PATH = ""
# Classes evaluated, a subset of ATTACKER.VICTIM_CLASSES; []: as ATTACKER.VICTIM_CLASSES.
_C.ATTACKER.TEST.LABELS = []
# Records per mini-batch at evaluation (inference only: larger is faster).
_C.ATTACKER.TEST.BATCH_SIZE = 1024
# Folder holding attack_model_<k>/checkpoint.pth to evaluate; empty: this run's
# ATTACKER.TRAIN.CHECKPOINT_DIR (set it to test another run's attack models).
_C.ATTACKER.TEST.CHECKPOINT_DIR = ""
# Which attack model scores a record: label (its true class, as the paper) or
# argmax (the victim's top class, as the original README describes).
_C.ATTACKER.TEST.ROUTING = "label"
# Bootstrap resamples for the 95 % interval of each method's AUC; 0: none.
_C.ATTACKER.TEST.BOOTSTRAP = 200
# True: as many "in" as "out" records, class-balanced (10000 vs 10000 for a 15000
# victim, as the original); False: every victim-train and every test record.
_C.ATTACKER.TEST.BALANCED = True

_C.ATTACKER.LIRA = CN()
# Location of each target's "in" / "out" Gaussian: mean (of the reference models' scores;
# higher AUC at 16 and 64 shadows, docs/methods.md) or median (the authors' code); the
# spread is the standard deviation either way.
_C.ATTACKER.LIRA.ESTIMATOR = "mean"

_C.ATTACKER.LABEL_ONLY = CN()
# label_only (Choquette-Choo et al. 2021): augmented copies each record is queried with
# (itself, its flip, then shifts; at most 2 * (2 * MAX_SHIFT * (MAX_SHIFT + 1) + 1)).
_C.ATTACKER.LABEL_ONLY.NUM_QUERIES = 10
# Largest translation of a query, in pixels (|dy| + |dx|).
_C.ATTACKER.LABEL_ONLY.MAX_SHIFT = 1

_C.ATTACKER.AUDIT = CN()
# delta at which each method's ROC is turned into an empirical epsilon lower bound
# (metrics.json methods.<method>.overall.epsilon_lower_bound); typically below 1 / records.
_C.ATTACKER.AUDIT.DELTA = 1e-5
# Confidence of each one-sided Clopper-Pearson bound (TPR from below, FPR from above).
_C.ATTACKER.AUDIT.CONFIDENCE = 0.95

_C.ATTACKER.RMIA = CN()
# Population records z (from the shadow pool, trained on by no model) each target's
# likelihood ratio is compared with.
_C.ATTACKER.RMIA.NUM_POPULATION = 2500
# Offline approximation of Pr(x) from "out" models only: ((1 + a) Pr_out + (1 - a)) / 2;
# the paper's value for CIFAR-10 is 0.3.
_C.ATTACKER.RMIA.OFFLINE_A = 0.3
# A target dominates z when its ratio is at least GAMMA times z's.
_C.ATTACKER.RMIA.GAMMA = 1.0

# ------------------------------------------------------------------------------------ #
# Run-wide options
# ------------------------------------------------------------------------------------ #
# Seed of every random choice (splits, initialisations, shuffles).
_C.RNG_SEED = 0
# Device: auto (CUDA when present and USE_GPU > 0, else CPU), cpu, cuda, cuda:N.
_C.DEVICE = "auto"
# Original toolkit's switch: 0 forces the CPU, > 0 allows a GPU.
_C.USE_GPU = 1
# CPU workers (threads of one core each) training shadow packs side by side; the
# original's DataLoader workers (data is tensor-resident, so no loader needs them).
# 1: one pack at a time on all NUM_THREADS. Ignored on CUDA (one stream of packs).
_C.NUM_WORKERS = 2
# CPU threads for torch; 0: torch's default (one per core).
_C.NUM_THREADS = 0
# bf16 autocast when training victim and shadows, on CUDA or on CPUs with AVX512-BF16/AMX
# (emulated, so slower, on others); it runs PyTorch's ops (the fused CPU kernel below is
# float32 only). For this toolkit's small models it was slower than float32 on an H200
# and on a 2-core AMX CPU with the fused kernel (README, "Speed"). Posteriors, loss and
# weights stay float32, but results differ from float32 training by more than rounding,
# so it is part of the victim and shadow fingerprints.
_C.MIXED_PRECISION = False
# On CPU, run each convolution + 2x2 max-pool of a classifier (simplecnn, pytorchcnn) as
# the toolkit's fused C++ kernel (engine/csrc/conv_pool.cpp), compiled on first use (once
# per machine; the run log says how long) and cached under ~/.cache/torch_extensions.
# Same results as PyTorch's ops up to float rounding; where it cannot be compiled,
# PyTorch's ops run and the log says why.
_C.FUSED_CPU_KERNEL = True
# On CUDA, capture each training step once as a CUDA graph and replay it (one launch per
# step instead of dozens; the same kernels, so the same results); where a capture fails,
# the log says why and training goes on without graphs. Ignored on CPU.
_C.CUDA_GRAPHS = True
# Parent folder of run folders, used when OUTPUT_DIR is empty.
_C.LOG_DIR = "./log/"
# The run folder; empty: LOG_DIR/<dataset>/<time>_<shadow arch>_<attack arch>.
# Rerunning with the same OUTPUT_DIR reuses what was already done.
_C.OUTPUT_DIR = ""


def get_cfg():
    """A fresh copy of the default config (never the module-level tree)."""
    return _C.clone()
