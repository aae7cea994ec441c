"""kubenas_trial: the trial-side SDK and PyTorch trainer."""
