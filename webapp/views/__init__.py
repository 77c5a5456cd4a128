"""The pages of the web app, one script each (run by ``st.navigation`` in ``webapp/app.py``)."""
