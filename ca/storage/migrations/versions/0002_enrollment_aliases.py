"""enrollment aliases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import ca.storage.tables


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_alias',
    sa.Column('alias', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('attested_value', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('single_use', sa.Boolean(), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('created_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('used_at', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('alias')
    )


def downgrade() -> None:
    op.drop_table('device_alias')
