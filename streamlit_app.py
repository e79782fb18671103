"""PicMetric — the Analyze page (placeholder until the UI lands)."""

import streamlit as st

st.set_page_config(page_title="PicMetric", page_icon="🔍", layout="wide")
st.title("PicMetric")
st.write("Drop photos to see what ResNet50, YOLOv3 and MTCNN find.")
