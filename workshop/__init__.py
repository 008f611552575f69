"""PyTorch image classification, line by line: the code the workshop's lessons teach.

Each lesson imports what it uses from these modules by name, `from workshop.nets import
WorkshopNet` say. ARCHITECTURE.md says how the parts fit together.

Made from the lessons' cells (tools/export_lessons.py; edit the lesson, never the module):
    workshop.images       lesson 02   CIFAR10_MEAN, CIFAR10_STD
    workshop.nets         lesson 03   TutorialNet, conv_bn, WorkshopNet
    workshop.training     lesson 05   RECIPE, normalize, augment, train_step, train_epoch,
                                      predict, accuracy, make_optimizer, fit
    workshop.gpu          lesson 06   synchronize
    workshop.fast         lesson 07   FAST_RECIPE, FastNet, train_fast, predict_shifted, ...
    workshop.distributed  lesson 08   shard, average_gradients_by_hand, ddp_epoch, save_atomically

Written here, because no lesson teaches them (the lessons that call them name them):
    workshop.data         where CIFAR-10 lives, checked or fetched; WorkshopError
    workshop.device       pick_device, cpu_autocast_dtype, cpu_path
    workshop.checkpoints  checkpoint_path, load_checkpoint
    workshop.ddp_train    lesson 08's training script: torchrun ... -m workshop.ddp_train
    workshop.launch       torchrun with a deadline and one-line explanations
    workshop.hub          a room's JupyterHub (python3 run.py hub): an account and copy each
    workshop.lessons      the lesson notebooks as files: read and executed by the tools and tests
"""
