"""The platform protocols walletd answers, one package each."""
