"""The digest as an email: rendered, styled, personalised."""
