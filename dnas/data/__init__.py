"""Datasets: embedded digits, MNIST / Fashion-MNIST, CIFAR-10, synthetic; splits,
normalisation, augmentation on device, batches as a pure function of ``(key, step)``."""
