"""The model registry: every classifier the lab knows (bundled, torchvision, bring-your-own), loaded
once and kept resident; and the reproducible LeNet training that makes models/lenet-mnist.pt."""
