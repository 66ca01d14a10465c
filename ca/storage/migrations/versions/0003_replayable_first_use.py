"""replayable evidence: first use per identifier

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import ca.storage.tables


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replayable_first_use',
    sa.Column('identifier', sqlmodel.sql.sqltypes.AutoString(length=1100), nullable=False),
    sa.Column('fmt', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('account_thumbprint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('used_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('identifier')
    )


def downgrade() -> None:
    op.drop_table('replayable_first_use')
