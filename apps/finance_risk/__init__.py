"""Finance risk: card-transaction fraud scoring over customer and terminal histories, evaluated with
the Fraud Detection Handbook's delayed-label protocol."""
