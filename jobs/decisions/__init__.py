"""Turning measurements into decisions: comparison (Pareto front, sweet spot, cost, speed-up intervals), hardware
advice, and the wizard that plans and reads a whole trial. Only sound, comparable measurements decide."""
