"""Entry point of the web app: ``streamlit run webapp/app.py`` (or ``alz ui``).

The database is ``ALZ_UI_DATABASE_URL`` (set by ``alz ui`` to the read-only role), else
``ALZ_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import streamlit as st

from webapp.common import PAGES, where_connected

# visitors never see a traceback (which may name the database), however the app is started;
# `alz ui` passes --client.showErrorDetails false as well
st.set_option("client.showErrorDetails", False)
st.set_page_config(page_title="AutoLoss-Zero", page_icon=":material/function:", layout="wide")

_TITLES = {"searches": "Searches", "population": "Population", "candidate": "Candidate",
           "lineage": "Lineage", "formulas": "Formulas", "compare": "Compare"}
# Material icons ship with Streamlit (emoji need fonts a server or browser may lack)
_ICONS = {"searches": ":material/monitoring:", "population": ":material/table_rows:",
          "candidate": ":material/function:", "lineage": ":material/account_tree:",
          "formulas": ":material/functions:", "compare": ":material/compare_arrows:"}

navigation = st.navigation([
    st.Page(path, title=_TITLES[key], icon=_ICONS[key], url_path=key,
            default=key == "searches")
    for key, path in PAGES.items()])
st.sidebar.caption(f"AutoLoss-Zero · read-only view of {where_connected()}")
navigation.run()
