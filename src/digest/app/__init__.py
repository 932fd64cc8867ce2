"""What the front ends share: settings, the use cases, and their wording."""
