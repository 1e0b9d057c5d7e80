"""Python stubs generated from proto/rankitect/v1/*.proto (`make proto`); do not edit them."""
