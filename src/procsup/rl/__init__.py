"""Reinforcement-learning baselines trained on the outcome reward only, to compare with process supervision."""
