"""End to end on real MNIST (LENET_MNIST_DIR): LeNet-5 reaches 0.98 test accuracy after one epoch."""
import lenet
from lenet import optim


def test_lenet5_one_epoch_on_mnist(mnist):
    lenet.seed(0)
    model = lenet.LeNet5()
    trainer = lenet.Trainer(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), batch_size=64, seed=0,
                            lr_schedule="cosine")
    history = trainer.fit(mnist.train_images, mnist.train_labels, 1, test=(mnist.test_images, mnist.test_labels))
    assert history[0]["test_accuracy"] >= 0.98, history
    assert history[0]["loss"] < 0.35


def test_coreml_graph_learns_on_mnist_subset(mnist):
    lenet.seed(0)
    model = lenet.CoreMLNet()
    trainer = lenet.Trainer(model, optim.Adam(model.parameters(), lr=1e-3), batch_size=128, seed=0, log=None)
    trainer.fit(mnist.train_images[:12000], mnist.train_labels[:12000], 1)
    assert trainer.evaluate(mnist.test_images, mnist.test_labels)["accuracy"] >= 0.90
