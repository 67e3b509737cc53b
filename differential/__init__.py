"""The differential harness: runs a scratch model and the torch reference side by side and reports
the first module whose forward output or gradient diverges."""
