"""A short training on real MNIST (LENET_MNIST_DIR), small enough to run under CPU emulation (scripts/arm.sh):
LeNet-5 on the first 3000 training images for one epoch, evaluated on the first 2000 test images.

Measured on x86-64 (reference, AVX2 and AVX-512 alike): 0.8915 test accuracy with seed 0, 0.866-0.906 over seeds
0-3; a table that breaks a kernel lands far lower (an untrained net scores about 0.1)."""
import lenet
from lenet import optim

TRAIN, TEST, MIN_ACCURACY = 3000, 2000, 0.85


def test_lenet5_short_training_on_mnist(mnist):
    lenet.seed(0)
    model = lenet.LeNet5()
    trainer = lenet.Trainer(model, optim.SGD(model.parameters(), lr=0.02, momentum=0.9), batch_size=8, seed=0,
                            lr_schedule="cosine", log=None)
    history = trainer.fit(mnist.train_images[:TRAIN], mnist.train_labels[:TRAIN], 1)
    result = trainer.evaluate(mnist.test_images[:TEST], mnist.test_labels[:TEST])
    assert result["accuracy"] >= MIN_ACCURACY, (lenet.kernels()["isa"], history, result)
