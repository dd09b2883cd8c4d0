"""Reward-model training core: plain torch + transformers, no Django.

Importing this package loads nothing, so that the Django side can read a
TrainConfig or build PreferenceExamples in a process that never trains (a web
process must start without torch). Import each name from its module; those
marked * load torch:

    from rewardmodel.core.config import TrainConfig, default_backbone
    from rewardmodel.core.examples import Conversation, PreferenceExample, holdout_split, soft_target
    from rewardmodel.core.train import train, TrainResult, TrainingCancelled                      *
    from rewardmodel.core.evaluate import evaluate                                                *
    from rewardmodel.core.scoring import score, mean_reward                                       *
    from rewardmodel.core.checkpoint import save_checkpoint, load_checkpoint, verify_checkpoint,  *
        CheckpointError, default_model_root
    from rewardmodel.core.model import load_backbone, resolve_device                              *
    from rewardmodel.core.loss import bradley_terry_loss                                          *

The whole surface a caller (the Django pipeline, the CLI, a notebook) needs:

    config = TrainConfig(epochs=2)                     # backbone defaults to the offline all-MiniLM-L6-v2
    result = train(config, train_examples, eval_examples, progress=on_step, should_stop=cancelled)
    path = save_checkpoint(default_model_root(), "my-project", 3, result.model, result.tokenizer,
                           config, result.metrics, data_snapshot={"judgments": 1234})
    model, tokenizer, metadata = load_checkpoint(path)
    rewards = score(model, tokenizer, [(conversation, response), ...], config)
"""
