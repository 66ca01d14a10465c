"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import ca.storage.tables


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('account',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('key_thumbprint', sa.String(length=64), nullable=False),
    sa.Column('jwk', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('contact', sa.JSON(), nullable=False),
    sa.Column('tos_agreed', sa.Boolean(), nullable=False),
    sa.Column('eab_key_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('created_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_thumbprint')
    )
    op.create_table('acme_order',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('identifiers', sa.JSON(), nullable=False),
    sa.Column('profile', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('expires', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('not_before', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('not_after', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('csr', sa.LargeBinary(), nullable=True),
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('issuance_started', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('certificate_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('replaces', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('created_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('acme_order', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_acme_order_account_id'), ['account_id'], unique=False)

    op.create_table('authorization',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('identifier_type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('identifier_value', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('wildcard', sa.Boolean(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('expires', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('authorization', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_authorization_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_authorization_order_id'), ['order_id'], unique=False)

    op.create_table('certificate',
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('key_spki_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('identifiers', sa.JSON(), nullable=False),
    sa.Column('not_before', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('not_after', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('revocation_reason', sa.Integer(), nullable=True),
    sa.Column('replaced_by', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.PrimaryKeyConstraint('serial')
    )
    with op.batch_alter_table('certificate', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificate_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificate_key_spki_sha256'), ['key_spki_sha256'], unique=False)

    op.create_table('challenge',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('authz_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('validated', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('processing_since', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('record', sa.JSON(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token')
    )
    with op.batch_alter_table('challenge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_authz_id'), ['authz_id'], unique=False)

    op.create_table('eab_key',
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('hmac_key', sa.LargeBinary(), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('created_at', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('bound_at', ca.storage.tables.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('key_id')
    )
    op.create_table('setting',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('used_nonce',
    sa.Column('value', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('expires', ca.storage.tables.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('value')
    )
    with op.batch_alter_table('used_nonce', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_nonce_expires'), ['expires'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('used_nonce', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_nonce_expires'))

    op.drop_table('used_nonce')
    op.drop_table('setting')
    op.drop_table('eab_key')
    with op.batch_alter_table('challenge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_authz_id'))

    op.drop_table('challenge')
    with op.batch_alter_table('certificate', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificate_key_spki_sha256'))
        batch_op.drop_index(batch_op.f('ix_certificate_account_id'))

    op.drop_table('certificate')
    with op.batch_alter_table('authorization', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_authorization_order_id'))
        batch_op.drop_index(batch_op.f('ix_authorization_account_id'))

    op.drop_table('authorization')
    with op.batch_alter_table('acme_order', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_acme_order_account_id'))

    op.drop_table('acme_order')
    op.drop_table('account')
