"""TensorFlow/Keras peer for ``lenet.bench --compare``.

Training: a ``tf.function`` train step fed with minibatches gathered from
preloaded tensors (``--tf-method step``, default), or ``model.fit`` on the
shuffled numpy arrays (``--tf-method fit``).  With ``--infer-latency`` the trained
model is also converted to TFLite (fp32 and full-integer int8) and batch-1
latency + test accuracy of both are measured with a 1-thread interpreter.

Run as ``python -m lenet.bench.peer_tensorflow ...`` or
``python lenet/bench/peer_tensorflow.py ...``.
"""

import os
import sys
import time

if __package__:
    from . import peer_common as pc
else:  # run as a file path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peer_common as pc

import numpy as np

FW = "tensorflow"
METHODS = {"step": "tf.function train step (gather from preloaded tensors)",
           "fit": "keras model.fit on shuffled numpy arrays"}
DEFAULT_METHOD = "step"
N_REPRESENTATIVE = 200


def build_model(name, keras, weight_decay=0.0, for_fit=False):
    L = keras.layers
    reg = {}
    if for_fit and weight_decay:
        # Coupled L2 like torch's weight_decay: d/dw (wd/2 * w^2) = wd * w.
        r = keras.regularizers.L2(weight_decay / 2)
        reg = {"kernel_regularizer": r, "bias_regularizer": r}
    if name == "lenet5":
        layers = [
            L.Conv2D(6, 5, padding="same", activation="relu", **reg), L.MaxPooling2D(2),
            L.Conv2D(16, 5, padding="valid", activation="relu", **reg), L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(120, activation="relu", **reg),
            L.Dense(84, activation="relu", **reg),
            L.Dense(10, **reg)]
    elif name == "coreml":
        layers = [
            L.Conv2D(32, 3, padding="valid", activation="relu", **reg), L.MaxPooling2D(2),
            L.Conv2D(32, 2, padding="valid", activation="relu", **reg), L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(500, activation="relu", **reg),
            L.Dense(10, **reg)]
    else:
        raise ValueError(name)
    return keras.Sequential([keras.Input((28, 28, 1))] + layers, name=name)


def make_optimizer(args, keras, n_train):
    lr = args.lr
    if args.schedule == "cosine":  # keras's CosineDecay with alpha 0 is pc.cosine_lr, stepped per update
        lr = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=pc.total_steps(args, n_train), alpha=0.0)
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=args.momentum)
    b1, b2 = pc.ADAM_BETAS
    return keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2,
                                 epsilon=pc.ADAM_EPS)


def nhwc(x):
    return np.ascontiguousarray(x.reshape(x.shape[0], 28, 28, 1))  # C == 1


def make_evaluator(tf, model, x_test, y_test):
    x = tf.constant(nhwc(x_test))
    y = tf.constant(y_test)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32),
                                  tf.TensorSpec([None], tf.int64)])
    def n_correct(xb, yb):
        pred = tf.argmax(model(xb, training=False), axis=1)
        return tf.reduce_sum(tf.cast(tf.equal(pred, yb), tf.int32))

    def evaluate():
        c = 0
        for a, b in pc.batch_slices(x.shape[0], pc.EVAL_BATCH):
            c += int(n_correct(x[a:b], y[a:b]))
        return c / x.shape[0]
    return evaluate


def train_step_method(tf, keras, args, d, model, log_epoch):
    X = tf.constant(nhwc(d["x_train"]))
    Y = tf.constant(d["y_train"])
    n = int(X.shape[0])
    opt = make_optimizer(args, keras, n)
    variables = model.trainable_variables
    opt.build(variables)
    wd = float(args.weight_decay)
    loss_sum = tf.Variable(0.0, dtype=tf.float32, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def train_step(idx):
        xb = tf.gather(X, idx)
        yb = tf.gather(Y, idx)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(xb, training=True), tf.float32)  # bf16 under mixed_bfloat16
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
        grads = tape.gradient(loss, variables)
        if wd:  # coupled L2, as torch.optim's weight_decay
            grads = [g + wd * v for g, v in zip(grads, variables)]
        opt.apply_gradients(zip(grads, variables))
        loss_sum.assign_add(loss * tf.cast(tf.shape(idx)[0], tf.float32))

    slices = pc.batch_slices(n, args.batch)
    for epoch, perm in enumerate(pc.epoch_permutations(args.seed, n, args.epochs), 1):
        loss_sum.assign(0.0)
        t0 = time.perf_counter()
        for a, b in slices:
            train_step(perm[a:b])
        loss = float(loss_sum.numpy())  # syncs: all steps are done
        secs = time.perf_counter() - t0
        log_epoch(epoch, secs, loss / n)
    return train_step.experimental_get_tracing_count()


def fit_method(tf, keras, args, d, model, log_epoch):
    x, y = nhwc(d["x_train"]), d["y_train"]
    n = x.shape[0]
    model.compile(optimizer=make_optimizer(args, keras, n),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for epoch, perm in enumerate(pc.epoch_permutations(args.seed, n, args.epochs), 1):
        t0 = time.perf_counter()
        h = model.fit(x[perm], y[perm], batch_size=args.batch, epochs=1,
                      shuffle=False, verbose=0)
        secs = time.perf_counter() - t0
        log_epoch(epoch, secs, float(h.history["loss"][0]))
    return None


# ---------------------------------------------------------------- inference

def convert_tflite(tf, model, x_rep=None):
    """Convert to a TFLite flatbuffer (fp32, or full-int8 when x_rep is given)."""
    try:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception:  # fallback: a batch-1 concrete function (no trackable_obj,
        # which would keep resource variables and break int8 calibration)
        @tf.function(input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32)])
        def serve(x):
            return model(x, training=False)
        conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    if x_rep is not None:
        def representative():
            for i in range(x_rep.shape[0]):
                yield [x_rep[i:i + 1]]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


class TFLiteRunner:
    """Batch-1 interpreter; quantises float input when the model is int8."""

    def __init__(self, tf, content, threads=1):
        self.it = tf.lite.Interpreter(model_content=content, num_threads=threads)
        self.it.allocate_tensors()
        inp = self.it.get_input_details()[0]
        out = self.it.get_output_details()[0]
        self.in_idx, self.out_idx = inp["index"], out["index"]
        self.in_dtype = inp["dtype"]
        self.in_scale, self.in_zero = inp["quantization"]

    def prepare(self, x):  # x: float (k,28,28,1)
        if self.in_dtype == np.int8:
            q = np.round(x / self.in_scale + self.in_zero)
            return np.clip(q, -128, 127).astype(np.int8)
        return x.astype(np.float32)

    def run(self, xq):
        self.it.set_tensor(self.in_idx, xq)
        self.it.invoke()
        return self.it.get_tensor(self.out_idx)

    def accuracy(self, x, y):
        xq = self.prepare(x)
        correct = 0
        for i in range(x.shape[0]):
            correct += int(np.argmax(self.run(xq[i:i + 1])) == y[i])
        return correct / x.shape[0]


def measure_latency(tf, model, d, threads, with_accuracy=True):
    """Batch-1 latency (median us): Keras fp32 via tf.function at `threads`
    threads, TFLite fp32 and full-int8 at 1 thread; also TFLite test accuracy.
    Returns (latency_detail, tflite_info)."""
    x_test, y_test = nhwc(d["x_test"]), d["y_test"]
    x1 = x_test[:1]
    detail, info = {}, {}

    @tf.function(input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32)])
    def predict1(x):
        return model(x, training=False)
    x1_t = tf.constant(x1)
    r = pc.time_latency(lambda: predict1(x1_t).numpy())
    r["threads"] = threads
    detail["keras_tf_function_fp32"] = r

    variants = (("tflite_fp32", None),
                ("tflite_int8", nhwc(d["x_train"][:N_REPRESENTATIVE])))
    for key, x_rep in variants:
        t0 = time.perf_counter()
        content = convert_tflite(tf, model, x_rep)
        conv_s = time.perf_counter() - t0
        runner = TFLiteRunner(tf, content, threads=1)
        xq = runner.prepare(x1)
        r = pc.time_latency(lambda: runner.run(xq))
        r["threads"] = 1
        detail[key] = r
        info[key] = {"bytes": len(content), "convert_seconds": conv_s,
                     "test_acc": runner.accuracy(x_test, y_test) if with_accuracy else None}
        if x_rep is not None:
            info[key]["representative_images"] = int(x_rep.shape[0])
    info["interpreter_threads"] = 1
    return detail, info


def main(argv=None):
    p = pc.build_parser(FW)
    p.add_argument("--tf-method", choices=sorted(METHODS), default=DEFAULT_METHOD,
                   help="training loop: " + "; ".join("%s = %s" % kv for kv in METHODS.items()))
    args = p.parse_args(argv)
    pc.pin_thread_env(args.threads)

    import tensorflow as tf
    # Before any TF op runs.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    keras.utils.set_random_seed(args.seed)  # python, numpy, tf

    d = pc.load_npz(args.data)
    if args.precision == "bf16":  # layers compute in bf16, variables and the optimiser stay fp32
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(args.model, keras, args.weight_decay, for_fit=args.tf_method == "fit")
    n_params = model.count_params()
    assert n_params == pc.PARAM_COUNTS[args.model], (args.model, n_params)

    res = pc.base_result(FW, tf.__version__, args, args.tf_method)
    res["method_detail"] = METHODS[args.tf_method]
    res["keras"] = keras.__version__
    res["params"] = n_params
    res["n_train"], res["n_test"] = int(d["x_train"].shape[0]), int(d["x_test"].shape[0])
    res["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    res["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    res["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")

    evaluate = make_evaluator(tf, model, d["x_test"], d["y_test"])

    def log_epoch(epoch, secs, loss):
        rec = {"epoch": epoch, "seconds": secs, "loss": loss, "test_acc": evaluate()}
        res["epochs"].append(rec)
        pc.log_epoch(FW, rec, args.epochs)

    train = train_step_method if args.tf_method == "step" else fit_method
    traces = train(tf, keras, args, d, model, log_epoch)
    if traces is not None:
        res["train_step_traces"] = traces

    if args.infer_latency:
        detail, info = measure_latency(tf, model, d, args.threads)
        res["infer_latency_us"] = {k: v["median_us"] for k, v in detail.items()}
        res["infer_latency_detail"] = detail
        res["tflite"] = info
        pc.log(FW, "batch-1 latency (median us): " + ", ".join(
            "%s %.1f" % kv for kv in res["infer_latency_us"].items()))
        pc.log(FW, "tflite test acc: fp32 %.4f, int8 %.4f"
               % (info["tflite_fp32"]["test_acc"], info["tflite_int8"]["test_acc"]))

    pc.write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
