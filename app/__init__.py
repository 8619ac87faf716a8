"""walletd: a seamless-wallet callback server."""
