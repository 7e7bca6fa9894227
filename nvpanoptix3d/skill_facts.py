"""What the skill bank's generator (`python -m tao_skill_bank.schema_gen`) writes about this engine into its skill's
files beside the schemas of `config`: the skill folder, the image, the shipped weights, the data format."""
MODEL = "nvpanoptix3d"
SKILL_DIR = "skills/tao-train-nvpanoptix3d"     # relative to the repository root
CONTAINER_IMAGE = "nvpanoptix3d:latest"
PRETRAINED_MODEL = "../nvpanoptix3d/weights/nvpanoptix3d_synthetic.safetensors"  # relative to references/
DATA_FORMAT = "front3d"
GPU_SPEC_KEY = "train.num_gpus"
MONITORING_METRIC = "kpi"
