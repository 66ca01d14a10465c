"""indexes for the queries whose cost grew with every order ever made

- The rate limit on new orders counts an account's orders of the last hour, and the orders
  list pages through them by id. With an index on account_id alone both read every order the
  account ever made: 1.5 ms for 3000 orders on SQLite, inside the write lock of each new order.
- Housekeeping looks every 30 s for challenges and orders left `processing`: without an index
  it scanned the whole table (43 ms for 300 000 challenges on SQLite, inside the write lock).
  Partial indexes hold only the rows in that state.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_PROCESSING = sa.text("status = 'processing'")


def upgrade() -> None:
    with op.batch_alter_table('acme_order', schema=None) as batch_op:
        batch_op.create_index('ix_acme_order_account_id_created_at', ['account_id', 'created_at'], unique=False)
        batch_op.create_index('ix_acme_order_account_id_id', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_acme_order_processing', ['issuance_started'], unique=False,
                              sqlite_where=_PROCESSING, postgresql_where=_PROCESSING)
        batch_op.drop_index('ix_acme_order_account_id')
    with op.batch_alter_table('challenge', schema=None) as batch_op:
        batch_op.create_index('ix_challenge_processing', ['processing_since'], unique=False,
                              sqlite_where=_PROCESSING, postgresql_where=_PROCESSING)


def downgrade() -> None:
    with op.batch_alter_table('challenge', schema=None) as batch_op:
        batch_op.drop_index('ix_challenge_processing')
    with op.batch_alter_table('acme_order', schema=None) as batch_op:
        batch_op.create_index('ix_acme_order_account_id', ['account_id'], unique=False)
        batch_op.drop_index('ix_acme_order_processing')
        batch_op.drop_index('ix_acme_order_account_id_id')
        batch_op.drop_index('ix_acme_order_account_id_created_at')
