"""What the front ends share: the settings, the use cases, and how their results are worded."""
