"""tpm ak enrollment: endorsement key registry and credential activations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import ca.storage.tables


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tpm_endorsement_key',
    sa.Column('ek_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('pinned', sa.Boolean(), nullable=False),
    sa.Column('identifier', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
    sa.Column('assigner', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
    sa.Column('manufacturer', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('created_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('ek_hash')
    )
    op.create_table('tpm_activation',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('ak_public', sa.LargeBinary(), nullable=False),
    sa.Column('ak_name', sqlmodel.sql.sqltypes.AutoString(length=140), nullable=False),
    sa.Column('ek_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('identifier', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('assigner', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
    sa.Column('manufacturer', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('secret_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('expires', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('created_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('answered_at', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('certificate', sa.LargeBinary(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tpm_activation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tpm_activation_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tpm_activation_ek_hash'), ['ek_hash'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tpm_activation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tpm_activation_ek_hash'))
        batch_op.drop_index(batch_op.f('ix_tpm_activation_account_id'))
    op.drop_table('tpm_activation')
    op.drop_table('tpm_endorsement_key')
